"""Parts shared by the agents: graph feature extractors and policies (and, alongside, the
Lagrange multiplier, cost buffers and vec-env wrappers)."""
