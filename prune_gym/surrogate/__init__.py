"""Tables of evaluated keep states for the standard tasks, and the surrogate fitted on them.

:mod:`prune_gym.surrogate.table` reads and checks a table (CSV + sha256 manifest);
:mod:`prune_gym.surrogate.model` fits the surrogate evaluator and measures its fidelity.
"""
