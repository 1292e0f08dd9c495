"""RL-Pruner's schedules: how one step's channel quota is split, how long the schedule
runs, and how the exploration rate decays.

Facts from Beryex/RLPruner-CNN (``utils/compression_utils.py``, class ``RL_Pruner``):
- each step removes ``int(total filters x prune_filter_ratio)`` filters, split across
  layers as ``round(PD x N)``; its ``_get_prune_counter`` corrects the rounding by searching
  a nearby N and may still miss N, and a layer at one filter silently prunes less. Here the
  split is exact: it always sums to N (or to every channel that may still go) and never
  takes a group below one channel;
- ``step()`` decays epsilon over the first 10 % of the pruning steps: ``linear``
  ``(1 - t/h) e0``, ``cosine`` ``(1 + cos(pi t/h)) e0 / 2``, ``constant`` ``e0``, with
  ``h = 0.1 x steps``, and 0 after that for all three.
"""

from __future__ import annotations

import math

import numpy as np

from agents.rl_pruner.distribution import mean_distribution

EXPLORE_STRATEGIES = ("constant", "linear", "cosine")
EXPLORE_FRACTION = 0.1  # epsilon reaches 0 after this fraction of the pruning steps


def split_quota(pd: np.ndarray, quota: int, counts) -> np.ndarray:
    """Channels to remove from each group: ``round(pd x quota)`` corrected to sum exactly.

    Groups keep at least one channel; mass on groups that cannot give any is moved to the
    rest (renormalised). Rounding errors are corrected one channel at a time where the
    rounding was furthest off (ties: the first group), so the split sums to
    ``min(quota, channels that may still go)``.

    Args:
        pd: one step's removal distribution over groups.
        quota: channels to remove in this step.
        counts: channels each group keeps now.
    """
    counts = np.asarray(counts, dtype=np.int64)
    capacity = np.maximum(counts - 1, 0)
    n = int(min(quota, capacity.sum()))
    take = np.zeros(len(counts), dtype=np.int64)
    if n == 0:
        return take
    mass = np.where(capacity > 0, np.asarray(pd, dtype=np.float64), 0.0)
    if mass.sum() <= 0:
        mass = capacity.astype(np.float64)
    raw = mass / mass.sum() * n
    take = np.minimum(np.floor(raw + 0.5).astype(np.int64), capacity)
    diff = n - int(take.sum())
    while diff:
        residual = raw - take
        if diff > 0:
            i = int(np.argmax(np.where(take < capacity, residual, -np.inf)))
            take[i] += 1
            diff -= 1
        else:
            i = int(np.argmin(np.where(take > 0, residual, np.inf)))
            take[i] -= 1
            diff += 1
    return take


def planned_steps(fits, counts, quota: int) -> int:
    """Pruning steps the size-proportional distribution needs until ``fits(counts)`` holds.

    RL-Pruner fixes its number of steps in advance (``round(sparsity / ratio)``); ours end
    when the budget is met, so the epsilon schedule is laid out over this estimate.
    """
    counts = np.asarray(counts, dtype=np.int64)
    steps = 0
    while not fits(counts) and (counts > 1).any():
        counts = counts - split_quota(mean_distribution(counts), quota, counts)
        steps += 1
    return steps


def epsilon(strategy: str, initial: float, step: int, steps: int) -> float:
    """Exploration rate after ``step`` completed pruning steps of a ``steps``-step schedule."""
    if step <= 0:
        return initial
    horizon = EXPLORE_FRACTION * steps
    if step > horizon:
        return 0.0
    if strategy == "linear":
        return max((1.0 - step / horizon) * initial, 0.0)
    if strategy == "cosine":
        return max(0.5 * (1.0 + math.cos(math.pi * step / horizon)) * initial, 0.0)
    return initial
