"""Channel selection: which channels of a group to keep, by a named importance criterion.

Scores come from torch-pruning's group importances (they reduce over every coupled layer
of a group, which a per-layer norm would not); only ``random`` is ours, because it must
be seeded per network rather than draw from torch's global generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from prune_gym.errors import InvalidArgumentError

IMPORTANCE_CRITERIA = ("l1", "l2", "taylor", "bn_scale", "random")


def check_criterion(name: str, argument: str = "importance") -> str:
    """Return ``name`` if it is a known criterion, else raise naming ``argument``."""
    if name not in IMPORTANCE_CRITERIA:
        raise InvalidArgumentError(
            f"{argument}={name!r} is not a known importance criterion; "
            f"choose one of {', '.join(IMPORTANCE_CRITERIA)}")
    return name


def _taylor_gradients(model: nn.Module, calibration) -> None:
    """Fill ``.grad`` with the gradient of the cross-entropy on a calibration batch."""
    if calibration is None:
        raise InvalidArgumentError(
            "importance='taylor' needs calibration data: pass calibration=(x, y), a batch of "
            "inputs and integer labels from the training split")
    x, y = calibration
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    model.train(was_training)


def channel_scores(model: nn.Module, groups: Sequence[tp.Group], criterion: str, *,
                   calibration=None, seed: int = 0, skip: Sequence[bool] | None = None,
                   failures: dict[int, str] | None = None) -> list[np.ndarray | None]:
    """One importance score per root channel of each group (higher = keep first).

    Groups flagged in ``skip`` (excluded ones) get zeros. A group that ``criterion``
    cannot score falls back to the magnitude; one that cannot be scored at all gets zeros,
    and when ``failures`` is given, its index there maps to the error (verification
    excludes such a group, so a ranking can never fail later).
    """
    check_criterion(criterion)
    sizes = [len(g[0].idxs) for g in groups]
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return [rng.random(n) for n in sizes]
    magnitude = tp.importance.GroupMagnitudeImportance(p=1 if criterion == "l1" else 2)
    if criterion == "taylor":
        _taylor_gradients(model, calibration)
        scorer = tp.importance.GroupTaylorImportance()
    elif criterion == "bn_scale":
        scorer = tp.importance.BNScaleImportance()
    else:
        scorer = magnitude

    def score(fn, group, n: int) -> np.ndarray | None:
        s = fn(group)
        if s is None:
            return None
        s = s.detach().double().cpu().numpy()
        if s.size != n:
            raise ValueError(f"{s.size} scores for {n} channels")
        return s.reshape(n)

    try:
        scores = []
        for i, (group, n) in enumerate(zip(groups, sizes)):
            if skip is not None and skip[i]:
                scores.append(np.zeros(n))
                continue
            try:
                s = score(scorer, group, n)
                if s is None:  # e.g. BN-scale on a group without BatchNorm: fall back to L2
                    s = score(magnitude, group, n)
            except Exception as exc:  # noqa: BLE001 - a group Torch-Pruning cannot score
                try:
                    s = score(magnitude, group, n) if scorer is not magnitude else None
                except Exception:  # noqa: BLE001
                    s = None
                if s is None and failures is not None:
                    failures[i] = f"{type(exc).__name__}: {str(exc)[:120]}"
            scores.append(np.zeros(n) if s is None else s)
    finally:
        if criterion == "taylor":
            model.zero_grad(set_to_none=True)
    return scores


def ranking(scores: np.ndarray) -> np.ndarray:
    """Channel indices from most to least important (stable for ties)."""
    return np.argsort(-scores, kind="stable")
