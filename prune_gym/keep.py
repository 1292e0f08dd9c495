"""Keep states: channels kept per group, as counts, index lists or boolean masks.

Users, baselines and environments all speak in keep states; checking them in one place
gives every entry point the same rules and the same messages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from prune_gym.errors import KeepStateError


def check_keep(groups: Sequence, keep) -> list:
    """``keep`` as a list with one valid entry per group, or a KeepStateError naming it."""
    if isinstance(keep, torch.Tensor):
        keep = keep.tolist()
    elif isinstance(keep, np.ndarray):
        keep = keep.tolist() if keep.dtype != object else list(keep)
    try:
        entries = list(keep)
    except TypeError:
        raise KeepStateError(f"keep must be a sequence with one entry per group "
                             f"({len(groups)} groups); got {type(keep).__name__}") from None
    if len(entries) != len(groups):
        raise KeepStateError(f"keep has {len(entries)} entries; the network has "
                             f"{len(groups)} prunable groups (see net.groups)")
    for i, (g, k) in enumerate(zip(groups, entries)):
        if isinstance(k, np.ndarray) and k.dtype == bool:
            if k.shape != (g.size,) or not k.any():
                raise KeepStateError(f"keep[{i}] for group {g.name!r} is a boolean mask: it "
                                     f"needs shape ({g.size},) and at least one True")
        elif isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            if not 1 <= k <= g.size:
                raise KeepStateError(f"keep[{i}]={k} for group {g.name!r}: a count must be "
                                     f"in [1, {g.size}]")
        else:
            try:
                idx = [int(j) for j in k]
            except (TypeError, ValueError):
                raise KeepStateError(f"keep[{i}] for group {g.name!r} must be a channel count "
                                     f"or a list of channel indices; got {k!r}") from None
            if not idx or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= g.size:
                raise KeepStateError(
                    f"keep[{i}] for group {g.name!r} must list 1 to {g.size} distinct "
                    f"channel indices in [0, {g.size - 1}]; got {idx}")
    return entries


def to_masks(groups: Sequence, entries: list,
             rankings: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
    """Boolean kept masks for checked ``entries``; a count keeps the first channels of the
    group's ranking (``rankings()`` is called only if a count needs it)."""
    out, ranked = [], None
    for g, k in zip(groups, entries):
        if isinstance(k, np.ndarray) and k.dtype == bool:
            out.append(k.copy())
            continue
        mask = np.zeros(g.size, dtype=bool)
        if isinstance(k, (int, np.integer)):
            ranked = ranked or rankings()
            mask[ranked[g.index][:k]] = True
        else:
            mask[[int(i) for i in k]] = True
        out.append(mask)
    return out


def round_counts(counts, sizes, multiple: int | None) -> np.ndarray:
    """Kept counts rounded half up to multiples of ``multiple`` (torch-pruning's ``round_to``
    idea: whole SIMD vectors per layer, so that a pruned network is as fast as its MACs say).

    A count stays in ``[multiple, size - size % multiple]``; a group left whole, or smaller
    than ``multiple``, is left as it is. ``multiple=None`` returns the counts unchanged.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if multiple is None or multiple == 1:
        return counts.copy()
    sizes = np.asarray(sizes, dtype=np.int64)
    rounded = np.floor(counts / multiple + 0.5).astype(np.int64) * multiple
    rounded = np.clip(rounded, multiple, np.maximum(sizes - sizes % multiple, multiple))
    keep_as_is = (sizes < multiple) | (counts >= sizes)
    return np.where(keep_as_is, counts, rounded)

