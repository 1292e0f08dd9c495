"""Physical pruning of a keep state: on a fresh copy (export) or in place and undone (evaluation).

Torch-Pruning's pruning functions do the surgery; this module decides what to hand them and
makes the surgery reversible. Why reversible: an environment evaluates thousands of keep
states, and the pruned network is cheaper to run than the masked full-size one, but a
deep copy of the model per evaluation costs more than the forward it saves on small
validation sets. Torch-Pruning's functions replace a layer's tensors and size attributes
(``layer.weight = Parameter(index_select(...))``, ``layer.out_channels -= k``) rather than
writing into them, so keeping the replaced objects and putting them back restores the
network exactly, in microseconds, with the original tensors untouched. Torch-Pruning has
no undo of its own, hence :class:`Snapshot`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from torch import nn

# (module name, "out" | "in") -> (Torch-Pruning handler, sorted indices to remove)
PrunePlan = dict[tuple[str, str], tuple[Callable, list[int]]]


def plan(groups: Sequence, all_masks: Sequence[np.ndarray]) -> PrunePlan:
    """The indices each layer dim loses under ``all_masks`` (one kept-mask per group).

    Indices are gathered per layer dim across groups first: a dim fed by a concatenation
    belongs to several groups and must be pruned once, in its original index space.
    """
    per_dim: dict[tuple[str, str], tuple[Callable, list[np.ndarray]]] = {}
    for g, mask in zip(groups, all_masks):
        if mask.all():
            continue
        pruned = ~mask
        for m in g.members:
            sel = m.target_idx[pruned[m.root_idx]]
            if len(sel):
                per_dim.setdefault((m.module, m.kind), (m.handler, []))[1].append(sel)
    return {dim: (handler, np.unique(np.concatenate(parts)).tolist())
            for dim, (handler, parts) in per_dim.items()}


def apply(model: nn.Module, prune_plan: PrunePlan) -> None:
    """Remove the planned channels from ``model`` with Torch-Pruning's functions."""
    for (name, _), (handler, idxs) in prune_plan.items():
        handler(model.get_submodule(name), idxs)


class Snapshot:
    """The attributes, parameters, buffers and children of some modules (and everything
    below them), so that in-place surgery on them can be undone exactly."""

    def __init__(self, modules: Sequence[nn.Module]):
        seen: set[int] = set()
        self._saved = []
        for top in modules:
            for m in top.modules():
                if id(m) not in seen:
                    seen.add(id(m))
                    self._saved.append((m, dict(vars(m)), dict(m._parameters),
                                        dict(m._buffers), dict(m._modules)))

    def restore(self) -> None:
        """Put every saved object back (the dicts themselves are kept, refilled)."""
        for m, attrs, params, buffers, children in self._saved:
            state = vars(m)
            state.clear()
            state.update(attrs)
            for live, saved in ((m._parameters, params), (m._buffers, buffers),
                                (m._modules, children)):
                live.clear()
                live.update(saved)


@contextmanager
def pruned_in_place(model: nn.Module, prune_plan: PrunePlan) -> Iterator[nn.Module]:
    """``model`` with the planned channels physically removed, restored on exit.

    Inside the block the model is a genuinely smaller network (new, smaller tensors);
    training it would change only those new tensors and the untouched originals, so use
    it to evaluate or recalibrate (BatchNorm statistics are put back by the caller), not
    to train: fine-tuning needs a copy.
    """
    snapshot = Snapshot([model.get_submodule(name) for name, _ in prune_plan])
    try:
        apply(model, prune_plan)
        yield model
    finally:
        snapshot.restore()
