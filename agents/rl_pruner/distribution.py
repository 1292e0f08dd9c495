"""RL-Pruner's policy: a distribution over groups of one step's channel removals.

No network and no gradients: the policy is the vector itself. It starts in proportion to
the groups' widths, is sampled with scaled Gaussian noise, and moves toward the best
sample with a ratio clip (Beryex/RLPruner-CNN, ``utils/compression_utils.py``:
``prune_architecture`` and ``update_prune_distribution``; floor 1e-5 is its
``RL_PROBABILITY_LOWER_BOUND``). A group that is down to one channel gets no mass and the
rest is renormalised, at every step: the public code zeroes such layers only when it
builds the distribution, so mass keeps flowing back to them and the step prunes less.
"""

from __future__ import annotations

import numpy as np

FLOOR = 1e-5


def renormalise(pd, counts) -> np.ndarray:
    """``pd`` floored at :data:`FLOOR` on groups that can still lose a channel, 0 elsewhere,
    summing to 1 (all zeros when no group can)."""
    movable = np.asarray(counts) > 1
    out = np.where(movable, np.maximum(np.asarray(pd, dtype=np.float64), FLOOR), 0.0)
    total = out.sum()
    return out / total if total > 0 else out


def mean_distribution(counts) -> np.ndarray:
    """Mass in proportion to each group's width (the initial policy and the reset one)."""
    return renormalise(np.asarray(counts, dtype=np.float64), counts)


def sample(pd, counts, rng: np.random.Generator, noise_var: float) -> np.ndarray:
    """One exploratory distribution: ``pd + N(0, 1) x noise_var x U(0, 1)``, floored and
    renormalised (the code's "variance" is this randomly shrunk standard deviation)."""
    noise = rng.standard_normal(len(pd)) * noise_var * rng.random()
    return renormalise(np.asarray(pd) + noise, counts)


def update(pd, best, counts, step_length: float, ppo_clip: float) -> np.ndarray:
    """Move ``pd`` toward the best sample, then clip each group's ratio to ``1 +- ppo_clip``.

    ``pd' = pd + step_length (best - pd)``, floored and renormalised; then
    ``pd'' = clip(pd' / pd, 1 - ppo_clip, 1 + ppo_clip) pd``, floored and renormalised.
    """
    pd = renormalise(pd, counts)
    moved = renormalise(pd + step_length * (np.asarray(best, dtype=np.float64) - pd), counts)
    ratio = np.divide(moved, pd, out=np.ones_like(pd), where=pd > 0)
    return renormalise(np.clip(ratio, 1.0 - ppo_clip, 1.0 + ppo_clip) * pd, counts)
