"""Tracing a model into Torch-Pruning groups, so that the analysis always ends.

Why this is more than ``DependencyGraph().build_dependency(...).get_all_groups()``: on the
model libraries people prune, Torch-Pruning's group search can follow channels through a
channel split, chunk or slice with the wrong offsets (a CSP stage's ``chunk``, a Res2Net
block's ``split``, MixNet's mixed-kernel ``split``), giving groups that index channels a
layer does not have (its importance then raises ``IndexError``), and on a residual that
adds to part of the channels (``x[:, :c] += shortcut``, RexNet and GhostNet) it can search
without end. Such ops have sizes fixed in the model's code (``torch.split(x, [24, 24])``,
``x[:, :16]``; ``chunk(2)`` needs equal halves), so the channels on either side of them
cannot change in number anyway. We therefore cut the graph there before the search: a
group reaches such an op and stops, and the group is excluded with the op named as the
reason (:func:`channel_split_ops`). A time limit bounds whatever else might stall it.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

import torch
import torch_pruning as tp

from prune_gym.errors import AnalysisTimeoutError, InvalidArgumentError

DEFAULT_ANALYSIS_TIMEOUT = 120.0

# in-place writes into part of a tensor (``x[:, :c] += y``): Torch-Pruning takes them for
# elementwise ops that couple every channel one to one, which they are not
_PARTIAL_WRITES = ("copyslices", "indexput", "scatter")


def check_timeout(timeout) -> float | None:
    """``analysis_timeout`` as positive seconds, or None for no limit."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and timeout > 0):
        raise InvalidArgumentError(
            f"analysis_timeout must be a positive number of seconds (or None for no limit); "
            f"got {timeout!r}")
    return float(timeout)


def _channel_dim(grad_fn) -> bool:
    """Whether the split or slice recorded by ``grad_fn`` acts on the channel dim."""
    dim = getattr(grad_fn, "_saved_dim", None)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if dim is None:
        return True  # unknown: assume the worst
    ndim = len(sizes) if sizes is not None else None
    if ndim is not None and -ndim <= dim < 0:
        dim += ndim
    elif ndim is not None and dim >= ndim:
        return True  # an uninitialised value (seen in some torch versions): assume the worst
    return dim == 1 or (ndim == 3 and dim == 2)


def _describe_split(node) -> str | None:
    """The op, if ``node`` is a channel split, chunk, slice or partial write that changes
    which channels go where; None for any other node."""
    grad_fn = node.grad_fn
    name = type(grad_fn).__name__ if grad_fn is not None else ""
    lower = name.lower()
    if node.type == tp.ops.OPTYPE.SPLIT or node.type == tp.ops.OPTYPE.UNBIND:
        if not _channel_dim(grad_fn):
            return None
        return f"a channel split ({name}: torch.split / chunk)"
    if node.type == tp.ops.OPTYPE.SLICE:
        if not _channel_dim(grad_fn):
            return None
        sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
        start, end, step = node.module.start, node.module.end, node.module.step
        dim = node.module.dim
        if sizes is not None and start == 0 and step == 1 and end >= sizes[dim]:
            return None  # the whole dim: no slice at all
        stop = "" if sizes is not None and end >= sizes[dim] else end
        return f"a channel slice ({name}: x[:, {start or ''}:{stop}])"
    if any(w in lower for w in _PARTIAL_WRITES):
        return f"a write into part of the channels ({name}: x[:, a:b] = ... / +=)"
    return None


def _producers(node) -> str:
    """Names of the layers that feed ``node`` (through op nodes), for messages."""
    seen, stack, names = set(), list(node.inputs), []
    while stack and len(names) < 2:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if n._name is not None:
            names.append(n._name)
        else:
            stack.extend(n.inputs)
    return " after " + ", ".join(names) if names else ""


def cut_channel_splits(dg: tp.DependencyGraph) -> dict[object, str]:
    """Stop Torch-Pruning's group search at every channel split, slice and partial write.

    The op keeps the dependencies that lead into it (so a group that reaches it contains
    it and can be recognised) and loses those that lead out of it. Returns the op nodes'
    modules with a description of each, for the exclusion reasons.
    """
    cut = {}
    for node in dg.module2node.values():
        what = _describe_split(node)
        if what:
            node.dependencies = []
            cut[node.module] = what + _producers(node)
    return cut


@contextmanager
def _deadline(seconds: float | None, stage: list[str]):
    """Raise :class:`AnalysisTimeoutError` in the block after ``seconds`` (main thread only:
    a signal is the one way to interrupt a pure-Python loop; elsewhere, no limit)."""
    if seconds is None or threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "setitimer"):
        yield
        return
    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    if 0 < outer <= seconds:  # the caller's own alarm comes first: leave it to fire
        yield
        return
    start = time.perf_counter()

    def expire(signum, frame):
        at = ""
        f = frame
        while f is not None:  # name the root layer Torch-Pruning was grouping when it stalled
            if f.f_code.co_name == "get_all_groups" and "m" in f.f_locals:
                dg = f.f_locals.get("self")
                root = getattr(dg, "_module2name", {}).get(f.f_locals["m"])
                at = f", while grouping the channels of {root!r}" if root else ""
                break
            f = f.f_back
        raise AnalysisTimeoutError(
            f"the analysis did not finish within analysis_timeout={seconds:g} s: "
            f"{stage[0]} stalled{at} after {time.perf_counter() - start:.0f} s. Pass the "
            "layers around it in ignored_layers, or a larger analysis_timeout if the model "
            "is just large")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # re-arm the caller's alarm for the time it had left
            signal.setitimer(signal.ITIMER_REAL,
                             max(outer - (time.perf_counter() - start), 1e-3))


def trace(model: torch.nn.Module, example_inputs: tuple, *, customized_pruners: dict,
          ignored_layers: list, root_module_types: tuple, timeout: float | None):
    """``(dependency graph, Torch-Pruning groups, cut ops)`` of ``model``, within ``timeout``.

    Raises:
        AnalysisTimeoutError: the tracing or the group search ran past ``timeout`` seconds.
    """
    stage = ["Torch-Pruning's tracing (build_dependency)"]
    # tracing follows autograd; callers may be in no_grad
    with torch.enable_grad(), _deadline(timeout, stage):
        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs, customized_pruners=customized_pruners)
        cut = cut_channel_splits(dg)
        stage[0] = "Torch-Pruning's group search (get_all_groups)"
        groups = list(dg.get_all_groups(ignored_layers=ignored_layers,
                                        root_module_types=root_module_types))
    return dg, groups, cut
