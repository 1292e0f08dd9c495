"""Closed-form MACs and parameter counts as a function of the kept channels.

Why closed form: an environment prices every candidate state, thousands of times per
training run, so pricing must not touch the model. Each parameter tensor's size is a
product of its original dims, where dim 0 scales with the kept output channels and dim 1
with the kept input channels of the group that owns them. A conv or linear call costs
``rows x weight.numel()`` MACs, where ``rows`` is the number of output positions it
computes (batch x H x W for a conv, the leading dims for a linear). That is exactly what
``torch.utils.flop_counter.FlopCounterMode`` counts (FLOPs / 2) on the exported model;
verification checks it on every analysed network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError


def check_budget(budget, argument: str = "budget") -> float:
    """``budget`` (the fraction of the original MACs/params to keep) as a float in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{argument} must be a number in (0, 1] (the fraction of the "
                                   f"original MACs/params to keep); got {budget!r}")
    budget = float(budget)
    if not (math.isfinite(budget) and 0.0 < budget <= 1.0):
        raise InvalidArgumentError(f"{argument}={budget} is outside (0, 1]: it is the fraction "
                                   "of the original MACs/params to keep, e.g. 0.5")
    return budget


@dataclass(frozen=True)
class DimOwner:
    """Which group decides a tensor dim, and how many entries each root channel holds.

    ``weights[r]`` is the number of indices along the dim that belong to root channel
    ``r`` of ``group`` (1 for plain coupling, H*W for a flatten before a linear, 0 for
    channels of a concatenation that this tensor does not see).
    """

    group: int
    weights: np.ndarray  # int64, one entry per root channel of the group
    total: int  # original size of the dim (sum of weights)

    @property
    def uniform(self) -> int | None:
        """Entries per root channel when all are equal (then only the count matters)."""
        w = self.weights
        return int(w[0]) if len(w) and (w == w[0]).all() else None


@dataclass(frozen=True)
class TensorCost:
    """One parameter tensor (or a weight that a conv/linear call reads ``rows`` times)."""

    numel: int
    dim0: int
    dim1: int
    out: tuple[DimOwner, ...]  # owners of dim 0 (several when it is a concatenation)
    inp: tuple[DimOwner, ...]  # owners of dim 1
    rows: int = 0  # > 0 for a MAC-counting call; 0 for a plain parameter


class CostModel:
    """Prices a keep state in MACs and parameters without touching the model.

    A keep state is given as boolean masks (one per group, True = kept) or as kept counts
    with a ranking's prefix table; both give the same numbers.
    """

    def __init__(self, macs_terms: list[TensorCost], param_terms: list[TensorCost],
                 fixed_params: int):
        self.macs_terms = macs_terms
        self.param_terms = param_terms
        self.fixed_params = fixed_params

    def prefix_table(self, rankings: list[np.ndarray]) -> dict[int, np.ndarray]:
        """Cumulative kept entries per non-uniform owner when channels are kept in
        ``rankings`` order: lets count-based keeps price concatenations exactly."""
        table = {}
        for term in self.macs_terms + self.param_terms:
            for owner in term.out + term.inp:
                if owner.uniform is None and id(owner) not in table:
                    order = rankings[owner.group]
                    table[id(owner)] = np.concatenate(([0], np.cumsum(owner.weights[order])))
        return table

    @staticmethod
    def _kept(owners: tuple[DimOwner, ...], full: int, counts, masks, prefix) -> int:
        if not owners:
            return full
        covered = kept = 0
        for owner in owners:
            covered += owner.total
            if masks is not None:
                kept += int(owner.weights[masks[owner.group]].sum())
            else:
                k = counts[owner.group]
                uniform = owner.uniform
                kept += uniform * k if uniform is not None else int(prefix[id(owner)][k])
        if full >= covered:  # the owners' entries (plus any unowned ones) make up the dim
            return full - covered + kept
        # A grouped conv's dim 1 holds in_channels / groups: it shrinks proportionally.
        return full * kept // covered

    def _size(self, term: TensorCost, counts, masks, prefix) -> int:
        d0 = self._kept(term.out, term.dim0, counts, masks, prefix)
        d1 = self._kept(term.inp, term.dim1, counts, masks, prefix)
        return term.numel // (term.dim0 * term.dim1) * d0 * d1

    def _total(self, terms, counts, masks, prefix, rows: bool) -> int:
        total = 0
        for term in terms:
            size = self._size(term, counts, masks, prefix)
            total += term.rows * size if rows else size
        return total

    def macs(self, counts=None, masks=None, prefix=None) -> int:
        """MACs of one forward of the example input (conv and linear layers).

        Give either ``masks`` (boolean kept mask per group) or ``counts`` (kept count per
        group) with ``prefix`` from :meth:`prefix_table` for the ranking in use.
        """
        return self._total(self.macs_terms, counts, masks, prefix, rows=True)

    def kept_dims(self, counts=None, masks=None, prefix=None) -> list[tuple[int, int]]:
        """``(dim 0, dim 1)`` of every conv/linear call's weight under a keep state: its
        kept output channels and kept input channels (per conv group). What a latency
        table is looked up with (:mod:`prune_gym.latency_model`)."""
        return [(self._kept(t.out, t.dim0, counts, masks, prefix),
                 self._kept(t.inp, t.dim1, counts, masks, prefix)) for t in self.macs_terms]

    def params(self, counts=None, masks=None, prefix=None) -> int:
        """Number of parameters of the pruned model (same arguments as :meth:`macs`)."""
        return self.fixed_params + self._total(self.param_terms, counts, masks, prefix,
                                               rows=False)


def build_cost_model(model: nn.Module, calls, groups) -> CostModel:
    """The cost model of ``model`` from its recorded conv/linear ``calls`` (``.name``,
    ``.rows``) and its channel ``groups`` (``.index``, ``.size``, ``.members``)."""
    owners: dict[tuple[str, str], list[DimOwner]] = {}
    for g in groups:
        for m in g.members:
            weights = np.bincount(m.root_idx, minlength=g.size).astype(np.int64)
            owners.setdefault((m.module, m.kind), []).append(
                DimOwner(g.index, weights, int(weights.sum())))
    modules = dict(model.named_modules())

    def term(module_name: str, p: torch.Tensor, rows: int = 0) -> TensorCost:
        out = tuple(owners.get((module_name, "out"), ()))
        inp = tuple(owners.get((module_name, "in"), ()))
        dim0 = p.shape[0] if p.dim() else 1
        dim1 = p.shape[1] if p.dim() >= 2 else 1
        if sum(o.total for o in out) > dim0:
            out = ()  # (fewer: the rest belongs to no group, e.g. it comes through a split)
        covered = sum(o.total for o in inp)
        if p.dim() < 2 or (covered > dim1 and (len(inp) != 1 or covered % dim1)):
            inp = ()  # dim 1 is the owners' channels (and unowned ones) or a grouped conv's share
        return TensorCost(p.numel(), dim0, dim1, out, inp, rows)

    macs = [term(c.name, modules[c.name].weight, c.rows) for c in calls if c.rows]
    params, fixed, seen = [], 0, set()
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            t = term(name, p)
            if not t.out and not t.inp:
                fixed += p.numel()
            else:
                params.append(t)
    return CostModel(macs, params, fixed)
