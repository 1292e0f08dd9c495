"""Topology: the network as one graph of layers and ops, traced once for observations.

Nodes are leaf modules (conv, norm, activation, pooling, ...) and the functional ops
between them (residual adds, concatenations, option-A pad/slice shortcuts, flatten);
edges are data flow. We trace autograd ourselves rather than reading Torch-Pruning's
graph because observations need what its graph leaves out: the network input, the
module behind every activation/pooling op, and the module *scope* of each functional
op (the add of ``layer2.3`` belongs to block ``layer2.3``), which gives block ids.
Channel ownership comes from the engine's groups (``net.all_groups[i].members``), so a
node's channels are tied to the very groups an agent acts on.

Everything here is plain numpy/python, so a :class:`Topology` pickles with the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from prune_gym.network import PrunableNetwork

OP_TYPES: tuple[str, ...] = ("input", "conv", "depthwise_conv", "linear", "norm", "activation",
                             "add", "mul", "concat", "pool", "reshape", "pad", "slice", "other")
OP_INDEX = {name: i for i, name in enumerate(OP_TYPES)}
EDGE_TYPES: tuple[str, ...] = ("plain", "skip", "concat")
"""``skip``: an input of an add/mul that went through fewer conv/linear layers than the
merge's deepest input (it jumps over the block); ``concat``: any input of a concatenation."""

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_FN_RULES = tuple((re.compile(p), kind) for p, kind in (  # autograd node name -> op type
    (r"(add|sub|rsub)$", "add"), (r"(mul|div)$", "mul"), (r"(cat|stack)$", "concat"),
    (r"(addmm|mm|linear)$", "linear"), (r"(cudnn|mkldnn)?convolution", "conv"),
    (r"(native|cudnn)(batch|layer|group)norm", "norm"),
    (r"(max|avg|adaptive\w*)pool|(mean|amax)$", "pool"),
    (r"(constant|reflection|replication|_channel)pad", "pad"),
    (r"(view|reshape|unsafeview|reshapealias|flatten|unsqueeze|squeeze|permute|transpose"
     r"|expand)$", "reshape"),
    (r"(slice|select|index|split|splitwithsizes|unbind|narrow)$", "slice"),
    (r"(relu|hardtanh|sigmoid|tanh|silu|gelu|hardswish|hardsigmoid|elu|leakyrelu|softplus"
     r"|mish|prelu|softmax|logsoftmax|threshold|clamp|clampmin)_?$", "activation")))


@dataclass
class Topology:
    """The network as a graph: one node per layer or op, edges along the data flow.

    Nodes are in forward order (node 0 is the network input). Group indices point into
    ``net.all_groups``; ``out_owner[n, g]`` counts the output channels of node ``n`` that
    group ``g`` owns (``in_owner`` likewise for its input channels), so that any keep
    state gives every node's current channel counts with one matrix product.
    """

    names: list[str]
    op_type: np.ndarray  # int8 (N,), index into OP_TYPES
    module: list[str | None]  # module name, None for functional ops
    edge_index: np.ndarray  # int32 (2, E), src -> dst
    edge_type: np.ndarray  # int8 (E,), index into EDGE_TYPES
    out_group: np.ndarray  # int16 (N,): the one group owning the output channels, or -1
    in_group: np.ndarray  # int16 (N,): the same for input channels (-1: none or several)
    block: np.ndarray  # int16 (N,): index into block_names, -1 outside blocks
    block_names: list[str]
    in_channels: np.ndarray  # int64 (N,), original
    out_channels: np.ndarray  # int64 (N,), original
    in_owner: np.ndarray  # float32 (N, G_all)
    out_owner: np.ndarray  # float32 (N, G_all)
    kernel: np.ndarray  # int16 (N,): kernel height (1 for ops without one)
    stride: np.ndarray  # int16 (N,): spatial down-sampling factor
    spatial: np.ndarray  # int64 (N,): output positions (H*W; 1 for flat outputs)
    input_spatial: int
    depth: np.ndarray  # int32 (N,): longest path from the input
    params: np.ndarray  # int64 (N,): parameters of the node (shared ones counted once)
    params_io: np.ndarray  # int64 (N,): parameters scaling with output x input channels
    params_o: np.ndarray  # int64 (N,): parameters scaling with output channels only
    in_scales: np.ndarray  # bool (N,): MACs/weights also shrink with the input channels
    weight_mean_abs: np.ndarray  # float32 (N,): mean |weight| (0 without weights)
    weight_dispersion: np.ndarray  # float32 (N,): cv/(1+cv) of per-output-channel L1 norms
    base_macs: int
    base_params: int

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.names)

    @property
    def num_edges(self) -> int:
        """Number of edges."""
        return int(self.edge_index.shape[1])



def _fn_label(fn) -> str:
    return re.sub(r"backward\d*$", "", type(fn).__name__.lower() if not hasattr(fn, "name")
                  else fn.name().lower())


def _fn_type(label: str) -> str:
    return next((kind for pattern, kind in _FN_RULES if pattern.match(label)), "other")


def _module_type(module: nn.Module) -> str | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        dw = module.groups > 1 and module.groups == module.in_channels
        return "depthwise_conv" if dw else "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    kind = {"activation": "activation", "pooling": "pool", "padding": "pad"}.get(
        type(module).__module__.rsplit(".", 1)[-1])
    if kind and not isinstance(module, nn.MultiheadAttention):
        return kind
    return None


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def _meta_shape(fn) -> tuple | None:
    meta = getattr(fn, "_input_metadata", None)  # the shape this op produced (torch >= 2.4)
    try:
        return tuple(meta[0].shape) if meta else None
    except Exception:  # noqa: BLE001 - private API: no shape is fine
        return None


class _Recorder(TorchFunctionMode):
    """Tags every autograd node with the module scope that was active when it was made."""

    def __init__(self) -> None:
        super().__init__()
        self.scope: list[str] = []
        self.seen: dict = {}  # grad_fn -> (scope, output shape)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        where = self.scope[-1] if self.scope else ""
        for t in _tensors(out):
            stack = [(t.grad_fn, tuple(t.shape))]
            while stack:  # also claim the op's internal nodes (e.g. x[:, :, ::2, ::2])
                fn, shape = stack.pop()
                if fn is None or fn in self.seen or not hasattr(fn, "next_functions") or \
                        type(fn).__name__ == "AccumulateGrad":
                    continue
                self.seen[fn] = (where, shape)
                stack.extend((g, _meta_shape(g)) for g, _ in fn.next_functions)
        return out


def _trace(model: nn.Module, example_inputs: tuple):
    """One forward with scope tracking.

    Returns the outputs, the input leaves, the recorder's ``grad_fn -> (scope, shape)``,
    ``grad_fn -> (module, call)`` for the output of every leaf-module call, and the
    ``(module, call) -> (input shape, output shape)`` of those calls.
    """
    names = {m: n for n, m in model.named_modules()}
    rec, frames, leaf_out, shapes, calls = _Recorder(), [], {}, {}, {}

    def pre(module, args):
        rec.scope.append(names[module])
        frames.append([a.grad_fn for a in args if isinstance(a, torch.Tensor)])

    def post(module, args, out):
        rec.scope.pop()
        before = frames.pop()
        if list(module.children()) or not isinstance(out, torch.Tensor):
            return
        fn = out.grad_fn
        if fn is not None and not any(fn is b for b in before):  # Identity/Dropout: no op
            name = names[module]
            call = (name, calls.setdefault(name, 0))
            calls[name] += 1
            leaf_out[fn] = call
            first = next((a for a in args if isinstance(a, torch.Tensor)), out)
            shapes[call] = (tuple(first.shape), tuple(out.shape))

    handles = [h for m in model.modules() for h in (m.register_forward_pre_hook(pre),
                                                     m.register_forward_hook(post))]
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in example_inputs]
    try:
        with torch.enable_grad(), rec:
            out = model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return _tensors(out), inputs, rec.seen, leaf_out, shapes


def _channels(shape: tuple | None) -> int:
    if not shape:
        return 1
    return int(shape[1]) if len(shape) >= 2 else int(shape[0])


def _first(value) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


def _walk(outputs, inputs, seen, leaf_out, collapse):
    """Node keys of every autograd node between the inputs and the outputs, and edges."""
    input_ids = {id(x): i for i, x in enumerate(inputs)}
    keys, info, stack, visited = {}, {}, [t.grad_fn for t in outputs], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in visited:
            continue
        visited.add(fn)
        if type(fn).__name__ == "AccumulateGrad":  # a leaf: the input, or a parameter
            i = input_ids.get(id(fn.variable))
            if i is not None:
                keys[fn] = ("input", i)
                info[keys[fn]] = ("", tuple(inputs[i].shape), i - (1 << 62), "input")
            continue
        scope, shape = seen.get(fn, ("", None))
        shape = shape or _meta_shape(fn)
        if fn in leaf_out:  # a layer with weights is one node however often it is called;
            name, call = leaf_out[fn]  # a weightless one (a shared ReLU) is one per call
            key = ("module", name, 0 if name in collapse else call)
        elif scope in collapse:  # internal op of a layer with weights: part of that layer
            key = ("module", scope, 0)
        else:
            key = ("op", id(fn))
        keys[fn] = key
        seq = fn._sequence_nr() if hasattr(fn, "_sequence_nr") else -len(visited)
        if key not in info or fn in leaf_out:
            first = info[key][2] if key in info else seq
            info[key] = (scope, shape, first, _fn_label(fn))
        if seq < info[key][2]:
            info[key] = (*info[key][:2], seq, info[key][3])
        stack.extend(g for g, _ in fn.next_functions)
    edges = {(keys[g], keys[fn]) for fn in keys if keys[fn][0] != "input"
             for g, _ in fn.next_functions if g in keys and keys[g] != keys[fn]}
    return info, edges


def _reachable(info, edges) -> list:
    """Keys reachable from the inputs (drops ops on parameters alone), in forward order."""
    succ: dict = {}
    for s, d in edges:
        succ.setdefault(s, []).append(d)
    into = {d for _, d in edges}
    roots = [k for k in info if k[0] == "input"] or [k for k in info if k not in into]
    keep, stack = set(roots), list(roots)
    while stack:
        for d in succ.get(stack.pop(), ()):
            if d not in keep:
                keep.add(d)
                stack.append(d)
    return sorted(keep, key=lambda k: info[k][2])


def _single_group(owner: np.ndarray) -> np.ndarray:
    nz = owner > 0
    return np.where(nz.sum(1) == 1, nz.argmax(1), -1).astype(np.int16)


def _block_ids(scopes: list[str], modules: dict) -> tuple[np.ndarray, list[str]]:
    """Block = outermost numbered container (``layer2.3``, ``features.5``) around a node."""
    names: list[str] = []
    ids = np.full(len(scopes), -1, dtype=np.int16)
    for n, scope in enumerate(scopes):
        parts = scope.split(".") if scope else []
        for i, part in enumerate(parts):
            key = ".".join(parts[: i + 1])
            if part.isdigit() and key in modules and list(modules[key].children()):
                if key not in names:
                    names.append(key)
                ids[n] = names.index(key)
                break
    return ids, names


def _weight_stats(weight: torch.Tensor) -> tuple[float, float]:
    w = weight.detach().float().abs()
    per_channel = w.reshape(w.shape[0], -1).sum(1) if w.dim() > 1 else w
    mean = float(per_channel.mean())
    cv = float(per_channel.std(unbiased=False)) / mean if mean > 0 else 0.0
    return float(w.mean()), cv / (1.0 + cv)


def _nodes(order, info, shapes, modules):
    """Per node: display name, module (or None), op kind, scope, input and output shape."""
    rows, counters = [], {}
    for key in order:
        scope, shape, _, label = info[key]
        if key[0] == "module":
            name = key[1]
            kind = _module_type(modules[name]) or _fn_type(label)
            in_shape, shape = shapes.get(key[1:], (None, shape))
            rows.append((name if key[2] == 0 else f"{name}:{key[2]}", name, kind, name,
                         in_shape, shape))
            continue
        kind = "input" if key[0] == "input" else _fn_type(label)
        label = {"constantpadnd": "pad", "_channelpad": "pad",
                 "nativebatchnorm": "batchnorm"}.get(label, label)
        k = counters[label] = counters.get(label, -1) + 1
        base = label if kind == "input" and k == 0 else f"{label}_{k}"
        rows.append((f"{scope}/{base}" if scope else base, None, kind, scope,
                     shape if kind == "input" else None, shape))
    return [list(col) for col in zip(*rows)]


def _flow(kinds, preds, in_shapes, out_shapes):
    """Main input, depth and edge types: a merge input that passed fewer conv/linear layers
    than the merge's deepest input is a skip."""
    n_nodes = len(kinds)
    conv_depth = np.zeros(n_nodes, dtype=np.int64)
    depth = np.zeros(n_nodes, dtype=np.int32)
    main = np.full(n_nodes, -1)
    for n in range(n_nodes):  # forward order (a back edge of a reused layer counts as 0)
        if preds[n]:
            cds = [conv_depth[p] for p in preds[n]]
            main[n] = preds[n][int(np.argmax(cds))]
            depth[n] = max(depth[p] for p in preds[n]) + 1
            conv_depth[n] = max(cds)
        conv_depth[n] += kinds[n] in ("conv", "depthwise_conv", "linear")
        if in_shapes[n] is None:
            in_shapes[n] = out_shapes[main[n]] if main[n] >= 0 else out_shapes[n]
    return main, depth, conv_depth


def _ownership(net, kinds, module_of, preds, main, in_ch, out_ch):
    """Channels of each node's input and output owned by each group (``net.all_groups``)."""
    own_out, own_in = {}, {}
    n_groups = len(net.all_groups)
    for g in net.all_groups:
        for m in g.members:
            table = own_out if m.kind == "out" else own_in
            table.setdefault(m.module, np.zeros(n_groups))[g.index] += len(m.target_idx)
    out_owner = np.zeros((len(kinds), n_groups))
    in_owner = np.zeros((len(kinds), n_groups))
    for n, kind in enumerate(kinds):
        if kind == "concat":
            via_inputs = sum((out_owner[p] for p in preds[n]), np.zeros(n_groups))
        else:
            via_inputs = out_owner[main[n]] if main[n] >= 0 else np.zeros(n_groups)
        in_owner[n] = own_in.get(module_of[n], via_inputs)
        if module_of[n] in own_out:
            out_owner[n] = own_out[module_of[n]]
        elif kind not in ("conv", "linear", "input"):  # channel-wise ops carry channels on
            row = via_inputs.copy()
            total = row.sum()
            if total > 0 and out_ch[n] != in_ch[n]:
                if kind == "reshape" and out_ch[n] % max(in_ch[n], 1) == 0:
                    row *= out_ch[n] // max(in_ch[n], 1)  # flatten: C*H*W entries per channel
                elif total > out_ch[n]:
                    row *= out_ch[n] / total  # a channel slice: keep the proportion
            out_owner[n] = row
    return in_owner, out_owner


def _costs(modules, module_of, kinds, out_ch):
    """Original parameters (split by how they scale) and weight statistics per node.

    MACs are not counted here: the observation takes them from the engine's cost model
    (:class:`prune_gym.observations.NodeMacs`), the one place MACs are priced.
    """
    n_nodes = len(kinds)
    params, params_io, params_o = (np.zeros(n_nodes, dtype=np.int64) for _ in range(3))
    w_mean, w_disp = np.zeros(n_nodes, dtype=np.float32), np.zeros(n_nodes, dtype=np.float32)
    position = {name: n for n, name in reversed(list(enumerate(module_of))) if name}
    counted: set[int] = set()
    for name, n in position.items():
        for p in modules[name].parameters(recurse=False):
            if id(p) in counted:
                continue
            counted.add(id(p))
            params[n] += p.numel()
            if p.dim() >= 2 and kinds[n] in ("conv", "linear"):
                params_io[n] += p.numel()
            elif p.dim() >= 1 and p.shape[0] == out_ch[n]:
                params_o[n] += p.numel()
        weight = getattr(modules[name], "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() >= 1 and weight.numel():
            w_mean[n], w_disp[n] = _weight_stats(weight)
    return params, params_io, params_o, w_mean, w_disp


def _geometry(modules, module_of, in_shapes, out_shapes):
    """Kernel height and spatial stride (from the layer, else from the shapes), H*W out."""
    n_nodes = len(module_of)
    kernel, stride = np.ones(n_nodes, dtype=np.int16), np.ones(n_nodes, dtype=np.int16)
    for n in range(n_nodes):
        layer = modules[module_of[n]] if module_of[n] is not None else None
        if layer is not None and hasattr(layer, "kernel_size"):
            kernel[n] = _first(layer.kernel_size)
            stride[n] = _first(layer.stride or layer.kernel_size)
        elif len(in_shapes[n] or ()) >= 3 and len(out_shapes[n] or ()) >= 3:
            ratio = max(1, round(in_shapes[n][2] / max(out_shapes[n][2], 1)))
            kernel[n] = stride[n] = min(ratio, np.iinfo(np.int16).max)
    spatial = np.array([int(np.prod(s[2:])) if s and len(s) >= 3 else 1 for s in out_shapes],
                       dtype=np.int64)
    return kernel, stride, spatial


def build_topology(net: PrunableNetwork) -> Topology:
    """Trace ``net``'s original model once and describe it as a :class:`Topology`."""
    model = net.original_copy().eval()  # pristine weights; the working copy may be masked
    modules = dict(model.named_modules())
    outputs, inputs, seen, leaf_out, shapes = _trace(model, net.example_inputs)
    collapse = {n for n, m in modules.items()
                if not list(m.children()) and any(True for _ in m.parameters(recurse=False))}
    info, edges = _walk(outputs, inputs, seen, leaf_out, collapse)
    order = _reachable(info, edges)
    index = {k: i for i, k in enumerate(order)}
    pairs = sorted((index[s], index[d]) for s, d in edges if s in index and d in index)
    preds: list[list[int]] = [[] for _ in order]
    for s, d in pairs:
        preds[d].append(s)
    names, module_of, kinds, scopes, in_shapes, out_shapes = _nodes(order, info, shapes, modules)
    main, depth, conv_depth = _flow(kinds, preds, in_shapes, out_shapes)
    edge_type = np.zeros(len(pairs), dtype=np.int8)
    for e, (s, d) in enumerate(pairs):
        if kinds[d] == "concat":
            edge_type[e] = 2
        elif kinds[d] in ("add", "mul") and len(set(preds[d])) > 1:
            edge_type[e] = int(conv_depth[s] < max(conv_depth[p] for p in preds[d]))
    out_ch = np.array([_channels(s) for s in out_shapes], dtype=np.int64)
    in_ch = np.array([_channels(s) for s in in_shapes], dtype=np.int64)
    for n, kind in enumerate(kinds):
        if kind == "concat":
            in_ch[n] = sum(out_ch[p] for p in preds[n])
        elif module_of[n] is not None and kind in ("conv", "depthwise_conv", "linear"):
            layer = modules[module_of[n]]
            in_ch[n] = getattr(layer, "in_channels", getattr(layer, "in_features", in_ch[n]))
    in_owner, out_owner = _ownership(net, kinds, module_of, preds, main, in_ch, out_ch)
    kernel, stride, spatial = _geometry(modules, module_of, in_shapes, out_shapes)
    params, params_io, params_o, w_mean, w_disp = _costs(modules, module_of, kinds, out_ch)
    block, block_names = _block_ids(scopes, modules)
    first = net.example_inputs[0]
    op_type = np.array([OP_INDEX[k] for k in kinds], dtype=np.int8)
    return Topology(
        names=names, op_type=op_type, module=module_of,
        edge_index=np.array(pairs, dtype=np.int32).reshape(-1, 2).T.copy(),
        edge_type=edge_type, out_group=_single_group(out_owner),
        in_group=_single_group(in_owner), block=block, block_names=block_names,
        in_channels=in_ch, out_channels=out_ch, in_owner=in_owner.astype(np.float32),
        out_owner=out_owner.astype(np.float32), kernel=kernel, stride=stride, spatial=spatial,
        input_spatial=int(np.prod(first.shape[2:])) if first.dim() >= 3 else 1,
        depth=depth, params=params, params_io=params_io, params_o=params_o,
        in_scales=np.isin(op_type, [OP_INDEX["conv"], OP_INDEX["linear"]]),
        weight_mean_abs=w_mean, weight_dispersion=w_disp, base_macs=int(net.base_macs),
        base_params=int(net.base_params))
