"""PrunableNetwork: a CNN analysed once into channel groups that can be priced, masked
and physically pruned.

Torch-Pruning's DependencyGraph finds which channels must go together. We keep, for every
layer a group touches, a table ``target index -> root channel`` (from ``root_idxs``), so that
any keep state can be applied three ways without re-tracing: priced in closed form
(:mod:`prune_gym.cost`), masked in place on a working copy (zeroing slices: exact and
restorable in microseconds), or exported physically with Torch-Pruning's own pruning
functions on a fresh copy. Verification (:mod:`prune_gym.verify`) proves the three agree on
this very network and excludes, with a reason, any group for which they do not.
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from prune_gym import physical
from prune_gym.cost import build_cost_model
from prune_gym.errors import AnalysisTimeoutError, InvalidArgumentError, ModelAnalysisError
from prune_gym.importance import channel_scores, check_criterion, ranking
from prune_gym.keep import check_keep, to_masks
from prune_gym.latency_model import load_latency_model
from prune_gym.pruners import CUSTOMIZED_PRUNERS, MASK_BUFFERS
from prune_gym.tracing import DEFAULT_ANALYSIS_TIMEOUT, check_timeout, trace
from prune_gym.verify import PruningWarning, verify_groups

_MAC_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
# Torch-Pruning ops whose index mappings can give a group the wrong indices or sizes
_MAPPING_OPS = (tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.RESHAPE,
                tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND, tp.ops.OPTYPE.SLICE)
CONSTRAINTS = ("macs", "params", "latency")


__all__ = ["CONSTRAINTS", "ChannelGroup", "LayerCall", "Member", "PrunableNetwork",
           "PruningWarning"]


@dataclass(frozen=True)
class Member:
    """One layer dim that a group prunes: ``target_idx[j]`` follows root channel ``root_idx[j]``."""

    module: str
    kind: str  # "out" (dim 0: output channels) or "in" (dim 1: input channels)
    handler: Callable
    target_idx: np.ndarray
    root_idx: np.ndarray


@dataclass
class ChannelGroup:
    """Channels that must be pruned together: the unit an agent acts on."""

    index: int
    name: str
    size: int
    members: tuple[Member, ...]
    prunable: bool = True
    reason: str | None = None

    @property
    def layers(self) -> list[str]:
        """Names of the modules this group changes, in member order."""
        return list(dict.fromkeys(m.module for m in self.members))


@dataclass
class LayerCall:
    """One call of a leaf module during the analysis forward (reused modules appear twice)."""

    name: str
    order: int
    rows: int = 0  # output positions of a conv/linear call (its MACs = rows x weight.numel())


def _channels(layer: nn.Module, kind: str) -> int | None:
    """Output (``kind="out"``) or input channels of a conv, linear or norm layer; None for
    other layers (ask their Torch-Pruning pruner)."""
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.out_channels if kind == "out" else layer.in_channels
    if isinstance(layer, nn.Linear):
        return layer.out_features if kind == "out" else layer.in_features
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return layer.num_features
    return None


def _as_inputs(example_inputs) -> tuple:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(
            isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    raise InvalidArgumentError(
        f"example_inputs must be a tensor (or a tuple of tensors) shaped like one batch the "
        f"model takes, e.g. torch.randn(1, 3, 32, 32); got {type(example_inputs).__name__}")


def _grouped_conv_fold(model: nn.Module, members: list[Member], size: int) -> np.ndarray | None:
    """Root channel -> position within a conv group, when the group feeds or is produced by
    a grouped (not depthwise) convolution; None otherwise.

    Why: a grouped conv needs the same number of channels in each of its conv groups, and
    Torch-Pruning's ConvPruner prunes its input assuming the same positions go in every
    conv group (it keeps the first ``kept // groups`` input columns). So such a group is
    acted on by position: channel ``p`` of the folded group is channel ``p`` of every conv
    group at once (balanced by construction; the cost model and masks need nothing new).
    Several grouped convs on one tensor fold to the greatest common block size. A group
    whose members map channels differently is left unfolded and verification decides.
    """
    modules = dict(model.named_modules())
    target_of_root, block = None, 0
    for m in members:
        layer = modules[m.module]
        if not isinstance(layer, nn.modules.conv._ConvNd) or layer.groups == 1:
            continue
        if tp.ops.module2type(layer) == tp.ops.OPTYPE.DEPTHWISE_CONV:
            continue  # Torch-Pruning couples a depthwise conv's input and output itself
        channels = layer.in_channels if m.kind == "in" else layer.out_channels
        if not len(m.target_idx) == channels == size or len(np.unique(m.root_idx)) != size:
            return None
        this = np.empty(size, dtype=np.int64)
        this[m.root_idx] = m.target_idx
        if target_of_root is not None and not np.array_equal(target_of_root, this):
            return None
        # several grouped convs on one tensor: a position within the smallest common block
        # is the same position within each conv's larger ones
        target_of_root, block = this, math.gcd(block, channels // layer.groups)
    return None if target_of_root is None else target_of_root % block


class PrunableNetwork:
    """A model analysed for structured channel pruning. The given model is never modified.

    Args:
        model: any ``nn.Module`` CNN; it is deep-copied.
        example_inputs: a tensor (or tuple) for one forward, e.g. ``torch.randn(1, 3, 32, 32)``;
            MACs are counted for one forward of exactly this input.
        importance: default channel-selection criterion (``l1``, ``l2``, ``taylor``,
            ``bn_scale``, ``random``) used when a keep state gives counts, not indices.
        calibration: ``(x, y)`` training batch for ``taylor``.
        ignored_layers: module names whose output channels must never be pruned; the
            classifier (the last conv/linear called) always is.
        seed: seeds the ``random`` criterion.
        verify: run the trial-prune verification (leave on unless you know better).
        analysis_timeout: seconds Torch-Pruning's tracing and group search may take before
            an :class:`~prune_gym.errors.AnalysisTimeoutError` names the stage and the layer
            it stalled on (``None``: no limit; enforced in the main thread only).
    """

    def __init__(self, model: nn.Module, example_inputs, *, importance: str = "l1",
                 calibration=None, ignored_layers: Sequence[str] = (), seed: int = 0,
                 verify: bool = True,
                 analysis_timeout: float | None = DEFAULT_ANALYSIS_TIMEOUT):
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(
                f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.example_inputs = _as_inputs(example_inputs)
        self.importance = check_criterion(importance)
        if importance == "taylor" and calibration is None:
            raise InvalidArgumentError(
                "importance='taylor' needs calibration=(x, y): a batch of training inputs and "
                "integer labels to take gradients on")
        self.calibration = calibration
        self.seed = seed
        self.analysis_timeout = check_timeout(analysis_timeout)
        try:
            self._template = copy.deepcopy(model)
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise InvalidArgumentError(f"model cannot be deep-copied ({exc}); prune-gym works "
                                       "on a copy so that your model is never modified") from exc
        self.model = copy.deepcopy(model).eval()
        self._names = {m: n for n, m in self.model.named_modules()}
        self.calls, self.output_shape = self._record_calls()
        classifier = [c.name for c in self.calls if c.rows][-1:]
        unknown = [n for n in ignored_layers if n not in dict(self.model.named_modules())]
        if unknown:
            raise InvalidArgumentError(f"ignored_layers names modules the model does not have: "
                                       f"{unknown}; use names from model.named_modules()")
        self.ignored_layers = tuple(dict.fromkeys([*classifier, *ignored_layers]))
        self._dg, tp_groups = self._trace()
        self.all_groups = self._make_groups(tp_groups)
        if not self.all_groups:
            raise ModelAnalysisError(
                "model has no prunable layer: found no conv/linear output channels that can "
                "be removed (the classifier and ignored_layers are never pruned)")
        self.cost = build_cost_model(self.model, self.calls, self.all_groups)
        self._build_mask_ops()
        self._pristine = {n: p.detach().clone() for n, p in self._maskable().items()}
        self._touched: set[str] = set()
        self._scores: dict[str, list[np.ndarray]] = {}
        self._score_failures: dict[str, dict[int, str]] = {}
        self._rankings: dict[str, list[np.ndarray]] = {}
        self._prefix: dict[str, dict] = {}
        self._topology = None
        if verify:
            verify_groups(self)
        self.latency_model = None  # set_latency_model: prices constraint="latency"
        self.base_macs = self.macs([g.size for g in self.groups])
        self.base_params = self.params([g.size for g in self.groups])

    # -- analysis -------------------------------------------------------------------------
    def _record_calls(self) -> tuple[list[LayerCall], tuple]:
        calls: list[LayerCall] = []

        def hook(module, args, out):
            if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0],
                                                                                torch.Tensor):
                return
            call = LayerCall(self._names[module], len(calls))
            if isinstance(module, _MAC_LAYERS):
                channels = out.shape[1] if isinstance(module, nn.modules.conv._ConvNd) else \
                    out.shape[-1]
                call.rows = out.numel() // channels
            calls.append(call)

        leaves = [m for m in self.model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(hook) for m in leaves]
        try:
            with torch.no_grad():
                out = self.model(*self.example_inputs)
        except Exception as exc:  # noqa: BLE001
            shapes = [tuple(t.shape) for t in self.example_inputs]
            raise ModelAnalysisError(
                f"model forward raised {type(exc).__name__}: {exc}. Check that example_inputs "
                f"(shapes {shapes}) is one batch the model accepts") from exc
        finally:
            for h in handles:
                h.remove()
        if not isinstance(out, torch.Tensor):
            raise ModelAnalysisError(f"model must return one tensor of logits; it returned "
                                     f"{type(out).__name__}")
        if not any(c.rows for c in calls):
            raise ModelAnalysisError("model has no prunable layer: no Conv or Linear module "
                                     "was called in its forward")
        return calls, tuple(out.shape)

    def _trace(self):
        modules = dict(self.model.named_modules())
        try:
            dg, groups, self._cut = trace(
                self.model, self.example_inputs, customized_pruners=CUSTOMIZED_PRUNERS,
                ignored_layers=[modules[n] for n in self.ignored_layers],
                root_module_types=_MAC_LAYERS,
                timeout=getattr(self, "analysis_timeout", DEFAULT_ANALYSIS_TIMEOUT))
        except AnalysisTimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ModelAnalysisError(
                f"model cannot be traced for dependency analysis ({type(exc).__name__}: {exc}); "
                "prune-gym needs a forward that autograd can trace") from exc
        return dg, groups

    def _make_groups(self, tp_groups) -> list[ChannelGroup]:
        first_call = {}
        for c in self.calls:
            first_call.setdefault(c.name, c.order)
        modules = dict(self.model.named_modules())
        made = []
        for tg in tp_groups:
            merged: dict[tuple[str, str], list] = {}
            reason, mapped = None, False
            for item in tg:
                module = item.dep.target.module
                name = self._names.get(module)
                if name is None:  # torch-pruning's internal op nodes carry no weights
                    mapped = mapped or item.dep.target.type in _MAPPING_OPS
                    if reason is None and module in self._cut:
                        reason = (f"its channels pass through {self._cut[module]}, whose sizes "
                                  "the model's code fixes")
                    continue
                kind = "out" if self._dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
                entry = merged.setdefault((name, kind), [item.dep.handler, [], []])
                entry[1].extend(int(i) for i in item.idxs)
                entry[2].extend(int(i) for i in item.root_idxs)
            members = []
            for (name, kind), (handler, tgt, root) in merged.items():
                tgt, first = np.unique(np.asarray(tgt, dtype=np.int64), return_index=True)
                members.append(Member(name, kind, handler, tgt,
                                      np.asarray(root, dtype=np.int64)[first]))
            reason = reason or self._out_of_range(modules, members)
            size = len(tg[0].idxs)
            fold = _grouped_conv_fold(self.model, members, size)
            if fold is not None:
                size = int(fold.max()) + 1
                members = [Member(m.module, m.kind, m.handler, m.target_idx, fold[m.root_idx])
                           for m in members]
            outs = [m.module for m in members if m.kind == "out"] or [m.module for m in members]
            order = min(first_call.get(n, 1 << 30) for n in outs)
            name = min(outs, key=lambda n: first_call.get(n, 1 << 30))
            group = ChannelGroup(0, name, size, tuple(members))
            if reason:
                group.prunable, group.reason = False, reason
            made.append((order, group, tg, fold, mapped))
        made.sort(key=lambda t: t[0])
        self._tp_groups = [t[2] for t in made]
        self._folds = [t[3] for t in made]
        self._mapped = [t[4] for t in made]
        groups = []
        for i, (_, g, *_) in enumerate(made):
            g.index = i
            if g.size < 2 and g.prunable:
                g.prunable, g.reason = False, "has a single channel (a group is never emptied)"
            groups.append(g)
        return groups

    def _out_of_range(self, modules: dict, members: list[Member]) -> str | None:
        """Why a group's index tables are wrong: a channel its layer does not have."""
        for m in members:
            layer = modules[m.module]
            n = _channels(layer, m.kind)
            if n is None:
                pruner = self._dg.get_pruner_of_module(layer)
                if pruner is None:
                    continue
                n = pruner.get_out_channels(layer) if m.kind == "out" else \
                    pruner.get_in_channels(layer)
            if n is not None and len(m.target_idx) and int(m.target_idx[-1]) >= n:
                return (f"Torch-Pruning maps it onto {m.kind}put channel {int(m.target_idx[-1])}"
                        f" of {m.module!r}, which has {n}")
        return None

    @property
    def groups(self) -> list[ChannelGroup]:
        """Prunable groups in forward order: the units of action, indexed by keep states."""
        return [g for g in self.all_groups if g.prunable]

    @property
    def excluded_groups(self) -> list[ChannelGroup]:
        """Groups analysis found but excluded, each with its ``reason``."""
        return [g for g in self.all_groups if not g.prunable]

    def _maskable(self) -> dict[str, torch.Tensor]:
        """The working copy's tensors that masking may zero: every parameter, and the
        gate buffers of layers with a customized pruner (:data:`pruners.MASK_BUFFERS`)."""
        if getattr(self, "_gates", None) is None:  # (module, buffer) pairs, found once
            self._gates = {f"{name}.{b}" if name else b: (module, b)
                           for name, module in self.model.named_modules()
                           for b in MASK_BUFFERS.get(type(module), ())}
        tensors = dict(self.model.named_parameters())
        for full, (module, b) in self._gates.items():
            tensors[full] = getattr(module, b)
        return tensors

    def _build_mask_ops(self) -> None:
        """Per group: (tensor name, dim, target_idx, root_idx) slices that masking zeroes.

        Zeroing a channel's producing weights and biases (and norm scale and shift) makes
        it exactly 0; zeroing the consumers' input columns as well makes the masked model
        compute what the physically pruned one does. A parameter-free layer that adds
        other channels onto a pruned one (the option-A shortcut) has a gate buffer that
        is zeroed instead. Verification checks it.
        """
        modules = dict(self.model.named_modules())
        self._mask_ops: list[list[tuple]] = [[] for _ in self.all_groups]
        for g in self.all_groups:
            for m in g.members:
                module = modules[m.module]
                size = len(m.target_idx)
                if m.kind == "out":
                    for bname in MASK_BUFFERS.get(type(module), ()):
                        full = f"{m.module}.{bname}" if m.module else bname
                        self._mask_ops[g.index].append((full, 0, m.target_idx, m.root_idx))
                for pname, p in module.named_parameters(recurse=False):
                    full = f"{m.module}.{pname}" if m.module else pname
                    if m.kind == "out" and p.dim() >= 1 and p.shape[0] >= size:
                        self._mask_ops[g.index].append((full, 0, m.target_idx, m.root_idx))
                    elif (m.kind == "in" and p.dim() >= 2 and p.shape[1] >= size
                          and getattr(module, "groups", 1) == 1):
                        self._mask_ops[g.index].append((full, 1, m.target_idx, m.root_idx))

    # -- keep states ----------------------------------------------------------------------
    def _scores_for(self, importance: str | None) -> list[np.ndarray]:
        criterion = check_criterion(importance or self.importance)
        if criterion not in self._scores:
            self.restore()
            failures: dict[int, str] = {}
            scores = channel_scores(self.model, self._dependency_groups(), criterion,
                                    calibration=self.calibration, seed=self.seed,
                                    skip=[not g.prunable for g in self.all_groups],
                                    failures=failures)
            # (setdefault: a network pickled before this cache existed has none)
            self.__dict__.setdefault("_score_failures", {})[criterion] = failures
            # a grouped conv's group ranks positions within a conv group: mean over groups
            self._scores[criterion] = [
                s if fold is None else np.bincount(fold, s) / np.bincount(fold)
                for s, fold in zip(scores, self._folds)]
        return self._scores[criterion]

    def unrankable_groups(self, importance: str | None = None) -> list[tuple[ChannelGroup, str]]:
        """Prunable groups whose channels ``importance`` (default: the network's) cannot
        score, with the error: verification excludes them, so ``masks()`` never fails.

        Only groups that pass through a concatenation, split, reshape or slice are tried
        (once scored, a criterion's scores are cached): elsewhere a group's indices are
        its members' own, which analysis has checked are in range, and a ranking (an
        argsort of scores of the group's size, zeros for a group that cannot be scored)
        cannot fail.
        """
        criterion = check_criterion(importance or self.importance)
        if criterion in getattr(self, "_score_failures", {}):
            failures = self._score_failures[criterion]
        else:
            mapped_groups = getattr(self, "_mapped", None) or [True] * len(self.all_groups)
            check = [g.prunable and mapped for g, mapped in zip(self.all_groups, mapped_groups)]
            failures = {}
            if any(check) and criterion != "random":
                self.restore()
                channel_scores(self.model, self._dependency_groups(), criterion,
                               calibration=self.calibration, seed=self.seed,
                               skip=[not c for c in check], failures=failures)
        return [(self.all_groups[i], f"its channels cannot be ranked by importance "
                                     f"{criterion!r} ({reason})")
                for i, reason in failures.items() if self.all_groups[i].prunable]

    def _rankings_for(self, importance: str | None) -> list[np.ndarray]:
        criterion = check_criterion(importance or self.importance)
        if criterion not in self._rankings:
            self._rankings[criterion] = [ranking(s) for s in self._scores_for(criterion)]
        return self._rankings[criterion]

    def scores(self, group: int, importance: str | None = None) -> np.ndarray:
        """Importance of each channel of prunable group ``group`` (group-normalised, so
        scores of different groups are comparable, as global pruning needs)."""
        return self._scores_for(importance)[self.groups[group].index]

    def metric(self, keep, constraint: str = "macs", importance: str | None = None,
               latency_model=None) -> int:
        """``macs(keep)``, ``params(keep)`` or the latency in nanoseconds that
        ``latency_model`` (a :class:`~prune_gym.latency_model.LatencyModel` of this network)
        predicts, by name: what a budget constrains (:class:`prune_gym.budget.Budget`)."""
        return self._price(check_keep(self.groups, keep), importance,
                           self._metric_fn(constraint, latency_model))

    def _metric_fn(self, constraint: str, latency_model=None):
        if constraint == "latency":
            latency_model = latency_model or self.latency_model
            if latency_model is None:
                raise InvalidArgumentError(
                    "constraint='latency' needs latency_model=: a LatencyModel of this network "
                    "fitted on this machine (prune_gym.fit_latency_model(net)); pass it to "
                    "metric() or to the budget (prune_gym.budget.Budget)")
            return functools.partial(latency_model.price, self.cost)
        if constraint not in CONSTRAINTS:
            raise InvalidArgumentError(f"constraint={constraint!r} is not known; choose one "
                                       f"of {', '.join(CONSTRAINTS)}")
        return getattr(self.cost, constraint)

    def set_latency_model(self, model) -> None:
        """Price ``constraint="latency"`` with ``model`` (a
        :class:`~prune_gym.latency_model.LatencyModel` or the JSON it was saved to; ``None``
        removes it), after checking it was fitted on this network.

        Deprecated: a latency model belongs to the budget, not to a network that searches
        and environments share; pass ``latency_model=`` to the environment, search or
        method, or to :class:`prune_gym.budget.Budget`.
        """
        warnings.warn("PrunableNetwork.set_latency_model is deprecated: pass latency_model= "
                      "to the environment, search or method (or prune_gym.budget.Budget) "
                      "instead", DeprecationWarning, stacklevel=2)
        if model is not None:
            model = load_latency_model(model)
            model.check_network(self)
        self.latency_model = model

    def kept_dims(self, keep, importance: str | None = None) -> list[tuple[int, int]]:
        """Kept ``(output, input)`` channels of every conv/linear call under ``keep``
        (:meth:`~prune_gym.cost.CostModel.kept_dims`): what a latency model prices."""
        return self._price(check_keep(self.groups, keep), importance, self.cost.kept_dims)

    def min_ratio(self, constraint: str = "macs", latency_model=None) -> float:
        """Smallest fraction of the original metric reachable (one channel per group)."""
        full = self.metric([g.size for g in self.groups], constraint, latency_model=latency_model)
        return self.metric([1 for _ in self.groups], constraint,
                           latency_model=latency_model) / full

    def _dependency_groups(self):
        if self._tp_groups is None:  # dropped when pickled; rebuild on the pristine copy
            self.restore()
            self._dg, tp_groups = self._trace()
            by_root = {}
            for tg in tp_groups:
                by_root[(self._names.get(tg[0].dep.target.module), len(tg[0].idxs))] = tg
            # a group is found again by its root layer, which is one of its "out" members
            self._tp_groups = [
                next(tg for (root, n), tg in by_root.items()
                     if n == (g.size if fold is None else len(fold)) and root in
                     {m.module for m in g.members if m.kind == "out"})
                for g, fold in zip(self.all_groups, self._folds)]
        return self._tp_groups

    @property
    def topology(self):
        """The network as a graph of layers and ops (built once, kept when pickled)."""
        if self._topology is None:
            from prune_gym.topology import build_topology

            self._topology = build_topology(self)
        return self._topology

    def ranking(self, group: int, importance: str | None = None) -> np.ndarray:
        """Channels of prunable group ``group`` from most to least important."""
        return self._rankings_for(importance)[self.groups[group].index]

    def resolve(self, keep, importance: str | None = None) -> list[np.ndarray]:
        """Kept channel indices (sorted) for each prunable group.

        ``keep`` has one entry per group in :attr:`groups`: a count of channels to keep (the
        most important ones under ``importance``), a sequence of channel indices, or a
        boolean mask over the group's channels.
        """
        return [np.flatnonzero(m) for m in self.masks(keep, importance)]

    def masks(self, keep, importance: str | None = None) -> list[np.ndarray]:
        """Boolean kept-channel mask for each prunable group."""
        return to_masks(self.groups, check_keep(self.groups, keep),
                        lambda: self._rankings_for(importance))

    def _all_masks(self, masks: list[np.ndarray]) -> list[np.ndarray]:
        """Masks for every group (excluded groups keep all their channels)."""
        full = [np.ones(g.size, dtype=bool) for g in self.all_groups]
        for g, m in zip(self.groups, masks):
            full[g.index] = m
        return full

    def _price(self, entries: list, importance, metric) -> int:
        """Price checked keep ``entries`` with ``metric`` (``self.cost.macs`` or ``.params``)."""
        if all(isinstance(k, (int, np.integer)) for k in entries):
            counts = [g.size for g in self.all_groups]
            for g, k in zip(self.groups, entries):
                counts[g.index] = int(k)
            criterion = importance or self.importance
            prefix = self._prefix.get(criterion)
            if prefix is None:
                needs = any(o.uniform is None for t in self.cost.macs_terms +
                            self.cost.param_terms for o in t.out + t.inp)
                prefix = self.cost.prefix_table(self._rankings_for(criterion)) if needs else {}
                self._prefix[criterion] = prefix
            return metric(counts=counts, prefix=prefix)
        return metric(masks=self._all_masks(self.masks(entries, importance)))

    def price(self, keep, importance: str | None = None) -> tuple[int, int]:
        """``(macs(keep), params(keep))``, checking the keep state once."""
        entries = check_keep(self.groups, keep)
        return (self._price(entries, importance, self.cost.macs),
                self._price(entries, importance, self.cost.params))

    def macs(self, keep, importance: str | None = None) -> int:
        """MACs of one forward of ``example_inputs`` under ``keep`` (closed form)."""
        return self.metric(keep, "macs", importance)

    def params(self, keep, importance: str | None = None) -> int:
        """Parameter count of the model pruned to ``keep`` (closed form)."""
        return self.metric(keep, "params", importance)

    # -- applying a keep state ------------------------------------------------------------
    @torch.no_grad()
    def apply_masked(self, keep, importance: str | None = None) -> nn.Module:
        """Zero the pruned channels of the working copy in place and return it.

        The working copy computes exactly what ``export(keep)`` computes; :meth:`restore`
        (or the :meth:`masked` context) undoes it in well under a millisecond.
        """
        self.apply_masks(self._all_masks(self.masks(keep, importance)))
        return self.model

    @torch.no_grad()
    def apply_masks(self, all_masks: Sequence[np.ndarray]) -> None:
        """Zero the working copy in place for kept-masks over :attr:`all_groups` (excluded
        groups included): the low-level form of :meth:`apply_masked`, used by verification."""
        self.restore()
        tensors = self._maskable()
        for g, mask in zip(self.all_groups, all_masks):
            if mask.all():
                continue
            pruned = ~mask
            for pname, dim, target, root in self._mask_ops[g.index]:
                sel = target[pruned[root]]
                if len(sel):
                    p = tensors[pname]
                    p.index_fill_(dim, torch.from_numpy(sel).to(p.device), 0.0)
                    self._touched.add(pname)

    @torch.no_grad()
    def restore(self) -> None:
        """Return the working copy to the original weights."""
        if not self._touched:
            return
        tensors = self._maskable()
        for name in self._touched:
            tensors[name].copy_(self._pristine[name])
        self._touched.clear()

    @contextmanager
    def masked(self, keep, importance: str | None = None):
        """``with net.masked(keep) as model:`` evaluate the masked model, then restore."""
        try:
            yield self.apply_masked(keep, importance)
        finally:
            self.restore()

    def original_copy(self) -> nn.Module:
        """A deep copy of the model as it was given (never masked or pruned)."""
        return copy.deepcopy(self._template)

    def _prune_copy(self, all_masks: list[np.ndarray]) -> nn.Module:
        """A fresh copy of the original model with pruned channels physically removed."""
        model = self.original_copy()
        physical.apply(model, physical.plan(self.all_groups, all_masks))
        return model

    @contextmanager
    def pruned_to_masks(self, all_masks: Sequence[np.ndarray]):
        """The working copy physically pruned in place to kept-masks over
        :attr:`all_groups`, restored on exit: the low-level form of :meth:`pruned`."""
        self.restore()
        with physical.pruned_in_place(self.model,
                                      physical.plan(self.all_groups, all_masks)) as model:
            yield model

    @contextmanager
    def pruned(self, keep, importance: str | None = None):
        """``with net.pruned(keep) as model:`` the working copy, physically pruned in place.

        Same network as ``export(keep)`` without the copy: the pruned layers get new,
        smaller tensors and are put back on exit, so this costs about what masking costs
        while the forward costs what the pruned network's does. Evaluate it (or
        recalibrate BatchNorm, putting the statistics back); never train it: parameters
        of unpruned layers are the working copy's own. Exiting the block restores it.
        """
        with self.pruned_to_masks(self._all_masks(self.masks(keep, importance))) as model:
            yield model

    def export(self, keep, importance: str | None = None) -> nn.Module:
        """A new, physically smaller ``nn.Module`` for ``keep``; the original is untouched.

        Raises:
            ModelAnalysisError: if the pruned model does not run or changes the output shape
                (never happens for groups that passed verification).
        """
        model = self._prune_copy(self._all_masks(self.masks(keep, importance)))
        try:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                out = model(*self.example_inputs)
            model.train(was_training)
        except Exception as exc:  # noqa: BLE001
            raise ModelAnalysisError(f"the pruned model fails forward ({exc}); refusing to "
                                     "export it. Please report this model.") from exc
        if tuple(out.shape) != self.output_shape:
            raise ModelAnalysisError(f"the pruned model outputs {tuple(out.shape)} instead of "
                                     f"{self.output_shape}; refusing to export it")
        return model

    # -- reporting ------------------------------------------------------------------------
    def describe(self) -> str:
        """A text table of every group found, whether it may be pruned and why not."""
        floor = self.min_ratio("macs")
        params_floor = self.params([1] * len(self.groups)) / self.base_params
        lines = [f"PrunableNetwork: {len(self.groups)} prunable group(s), "
                 f"{len(self.excluded_groups)} excluded; {self.base_macs:,} MACs, "
                 f"{self.base_params:,} params",
                 f"prunable groups control {1 - floor:.1%} of the MACs: keeping one channel "
                 f"in every group leaves {floor:.1%} ({params_floor:.1%} of the params)",
                 f"{'#':>3}  {'group':<32} {'size':>5}  {'layers':>6}  status"]
        for g in self.all_groups:
            status = "prunable" if g.prunable else f"EXCLUDED: {g.reason}"
            lines.append(f"{g.index:>3}  {g.name:<32} {g.size:>5}  {len(g.layers):>6}  {status}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"PrunableNetwork({type(self._template).__name__}, groups={len(self.groups)}, "
                f"excluded={len(self.excluded_groups)}, macs={self.base_macs:,})")

    def __getstate__(self):
        self.restore()
        state = self.__dict__.copy()
        state["_dg"] = None  # the traced graph holds autograd nodes: rebuilt on demand
        state["_tp_groups"] = None
        state["_prefix"] = {}
        state["_cut"] = {}  # Torch-Pruning's op nodes, like the graph
        return state
