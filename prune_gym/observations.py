"""Observations: the network graph with per-node pruning state, in two encodings.

One internal graph (:mod:`prune_gym.topology`), two encodings:

* ``mode="padded"`` (default, what SB3 and vector envs need): a ``Dict`` of fixed-size
  arrays whose shapes depend only on the network (or on ``max_nodes``/``max_edges``, so one
  agent can see several networks). Keys and dtypes:

  - ``node_features`` float32 ``(N, F)`` in [0, 1]: see :data:`NODE_FEATURES`;
  - ``edge_index`` int16 (int32 beyond 32,767 nodes) ``(2, E)``: source and target node;
  - ``edge_type`` int8 ``(E,)``: index into :data:`prune_gym.topology.EDGE_TYPES`
    (0 plain, 1 skip/residual, 2 concat input);
  - ``node_mask`` / ``edge_mask`` int8: 1 for real nodes/edges, 0 for padding (always at
    the end, padded edges point at node 0);
  - ``block`` int16 ``(N,)``: repeated-motif id (residual block ...), -1 outside blocks;
  - ``group`` int16 ``(N,)``: the node->group key, the index into ``net.groups`` of the
    prunable group that owns the node's output channels; -1 for none (several owners, an
    excluded group) and for padding. It ties an agent's per-node outputs to the actions of a
    group, on any network (``max_groups`` bounds it, so networks share one space);
  - ``globals`` float32 ``(4,)`` in [-1, 1]: :data:`GLOBAL_FEATURES`, kept separate from
    the node features (clipped);
  - plus the env's ``extra_spaces`` entries, verbatim.

* ``mode="graph"``: ``gymnasium.spaces.Graph`` whose node features are ``node_features``
  followed by the global features broadcast to every node (``F + 4`` columns; globals in
  [-1, 1]) and whose edges are the edge types (``Discrete(3)``). Block ids are static and
  available as ``encoder.topology.block``. With ``extra_spaces`` the space is
  ``Dict({"graph": Graph, **extra_spaces})``.

Everything static is computed once; :meth:`ObservationEncoder.encode` is a handful of
vectorised numpy operations (a matrix product of channel ownership by pruned fractions),
so that an environment step costs little more than its evaluation forward.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.spaces import GraphInstance

from prune_gym.arguments import check_choice, check_size
from prune_gym.cost import CostModel
from prune_gym.errors import InvalidArgumentError
from prune_gym.topology import EDGE_TYPES, OP_TYPES

NUM_GLOBAL_FEATURES = 4
GLOBAL_FEATURES = ("budget", "remaining_budget", "step_fraction", "metric_ratio")
STATIC_FEATURES = (
    "in_channels",  # original, log2(1 + c) / 16
    "out_channels",
    "kernel",  # 1 - 1/k (1x1 -> 0, 3x3 -> 0.67)
    "stride",  # 1 - 1/s (spatial down-sampling of the node)
    "spatial",  # log2(1 + H*W) / log2(1 + input H*W)
    "macs_share",  # node MACs / network MACs (original)
    "params_share",  # node parameters / network parameters (original)
    "weight_mean_abs",  # mean |w| / max over nodes of the same op type
    "weight_dispersion",  # cv / (1 + cv) of per-output-channel L1 norms
    "depth",  # longest path from the input / longest path overall
    "group_id",  # (index in net.groups + 1) / len(net.groups); 0: no prunable group
)
DYNAMIC_FEATURES = (
    "in_channels_now",  # current, log2(1 + c) / 16
    "out_channels_now",
    "kept_in",  # fraction of the input channels kept
    "kept_out",  # fraction of the output channels kept
    "macs_share_now",  # current node MACs / original network MACs
    "params_share_now",
    "decided_in",  # 1 if the group being decided owns input channels of this node
    "decided_out",  # 1 if it owns output channels of this node
)
NODE_FEATURES: tuple[str, ...] = (tuple(f"op_{t}" for t in OP_TYPES) + STATIC_FEATURES
                                  + DYNAMIC_FEATURES)
NUM_NODE_FEATURES = len(NODE_FEATURES)
DECIDED_OUT = NODE_FEATURES.index("decided_out")
PADDED_KEYS = ("node_features", "edge_index", "edge_type", "node_mask", "edge_mask", "block",
               "globals")
OPTIONAL_KEYS = ("group",)  # absent from observations made before the node->group key
_CHANNEL_SCALE = 16.0
_DYNAMIC = slice(NUM_NODE_FEATURES - len(DYNAMIC_FEATURES), NUM_NODE_FEATURES)


def _log_channels(c: np.ndarray) -> np.ndarray:
    return np.log2(1.0 + c) / _CHANNEL_SCALE


def _affine(owners, full: int, n_groups: int) -> tuple[int, np.ndarray] | None:
    """``(c, a)`` with the kept size of a dim ``= c + a @ counts``, as the cost model prices
    it, or None where it is not affine in the counts (uneven or grouped owners)."""
    row = np.zeros(n_groups)
    if not owners:
        return full, row
    covered = sum(o.total for o in owners)
    if full < covered or any(o.uniform is None for o in owners):
        return None
    for o in owners:
        row[o.group] += o.uniform
    return full - covered, row


class NodeMacs:
    """MACs of every node of the topology, priced by the engine's own cost model.

    The cost model prices a keep state as one term per conv/linear call; grouping those
    terms by the node of the layer called gives each node's MACs, so the observation's
    ``macs_share``/``macs_share_now`` are the very numbers the budget constrains: they sum
    to ``net.macs(keep) / net.base_macs`` by construction, with no second set of
    ownership rules to drift from them.

    Why not call the cost model per node and step: that is a Python loop over every
    conv/linear call, ~0.7 ms per step on ResNet-56. Most terms are bilinear in the kept
    counts (each dim an affine function of them), so those are read off the cost model's
    terms once into two matrices and priced with two products; the rest (uneven or grouped
    owners, e.g. a concatenation) are priced term by term by the cost model itself. The
    matrices are checked against the cost model at the full and the smallest state when
    built, and dropped for the exact path if they ever disagreed.

    Args:
        net: the analysed network.
        topo: its topology (``topo.module`` names the layer behind each node).
        importance: the criterion whose channel order count-based keep states follow
            (it matters only where a tensor dim mixes channels unevenly).
    """

    def __init__(self, net, topo, importance: str | None = None):
        calls = [c for c in net.calls if c.rows]  # the cost model's MAC terms, in order
        terms = net.cost.macs_terms
        if len(calls) != len(terms):
            raise RuntimeError(f"cost model has {len(terms)} MAC terms for {len(calls)} "
                               "conv/linear calls; it must have one per call")
        first_node: dict[str, int] = {}
        for n, name in enumerate(topo.module):
            if name is not None:
                first_node.setdefault(name, n)
        owned = [(first_node[c.name], t) for c, t in zip(calls, terms) if c.name in first_node]
        self.nodes = np.array(sorted({n for n, _ in owned}), dtype=np.int64)
        position = {int(n): i for i, n in enumerate(self.nodes)}
        self._terms = [(position[n], t) for n, t in owned]  # every term: the exact path
        self._net, self._importance = net, importance
        self._full = np.array([g.size for g in net.all_groups], dtype=np.int64)
        self._index = np.array([g.index for g in net.groups], dtype=np.int64)
        self._needs_prefix = any(o.uniform is None for t in terms for o in t.out + t.inp)
        self._prefix: dict | None = None
        self._use(self._terms)
        # the matrices must price exactly as the cost model does; if not, price term by term
        for keep in (self._full[self._index], np.ones(len(self._index), dtype=np.int64)):
            if not np.array_equal(self.macs(keep), self._exact_macs(keep, self._terms)):
                self._use([])
                break

    def _use(self, terms: list) -> None:
        """Price the affine ``terms`` with matrices, the others (and all, when ``terms`` is
        empty) term by term."""
        n_groups = len(self._full)
        rows, self._exact = [], []
        for node, term in terms:
            out = _affine(term.out, term.dim0, n_groups)
            inp = _affine(term.inp, term.dim1, n_groups)
            if out is None or inp is None:
                self._exact.append((node, term))
            else:
                rows.append((node, term.rows * (term.numel // (term.dim0 * term.dim1)), out,
                             inp))
        if not terms:
            self._exact = list(self._terms)
        self._node_of = np.array([r[0] for r in rows], dtype=np.int64)
        self._scale = np.array([r[1] for r in rows], dtype=np.float64)
        self._const = np.array([[r[2][0], r[3][0]] for r in rows], dtype=np.float64)
        self._coef = np.array([[r[2][1], r[3][1]] for r in rows], dtype=np.float64)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_prefix"] = None  # keyed by object ids, which a copy does not keep
        return state

    def _counts(self, keep_counts) -> np.ndarray:
        counts = self._full.copy()  # excluded groups keep every channel
        counts[self._index] = keep_counts
        return counts

    def _prefix_table(self) -> dict:
        if self._prefix is None:
            self._prefix = {}
            if self._needs_prefix:
                net = self._net
                # excluded groups are always full, where any channel order prices the same
                rankings = [np.arange(size) for size in self._full]
                for i, g in enumerate(net.groups):
                    rankings[g.index] = net.ranking(i, self._importance)
                self._prefix = net.cost.prefix_table(rankings)
        return self._prefix

    def _exact_macs(self, keep_counts, terms: list) -> np.ndarray:
        """The cost model's own price of ``terms``, summed per node."""
        counts = self._counts(keep_counts).tolist()
        out = np.zeros(len(self.nodes))
        prefix = self._prefix_table() if terms else {}
        for node, term in terms:
            out[node] += CostModel([term], [], 0).macs(counts=counts, prefix=prefix)
        return out

    def macs(self, keep_counts) -> np.ndarray:
        """MACs of each node in :attr:`nodes` when ``net.groups`` keep ``keep_counts``."""
        out = self._exact_macs(keep_counts, self._exact)
        if len(self._node_of):
            counts = self._counts(keep_counts).astype(np.float64)
            dims = self._const + self._coef @ counts  # (T, 2): kept dim 0 and dim 1
            out += np.bincount(self._node_of, self._scale * dims[:, 0] * dims[:, 1],
                               minlength=len(self.nodes))
        return out


class ObservationEncoder:
    """Turns a keep state of ``net`` into an observation of :attr:`space`.

    Args:
        net: the :class:`~prune_gym.network.PrunableNetwork` observed.
        mode: ``"padded"`` (SB3-ready ``Dict`` of fixed-size arrays) or ``"graph"``
            (``gymnasium.spaces.Graph``); see the module docstring.
        extra_spaces: env-specific entries merged verbatim into the ``Dict``.
        max_nodes: pad node arrays to this many nodes (default: exactly the network's).
        max_edges: pad edge arrays to this many edges (default: exactly the network's).
        max_groups: the bound of the ``group`` key (default: exactly the network's number of
            prunable groups); networks observed with the same ``max_*`` share one space.
        importance: the channel order of count-based keep states (default: the network's),
            for the MACs features; see :class:`NodeMacs`.

    Raises:
        InvalidArgumentError: unknown ``mode``, ``max_nodes``/``max_edges`` smaller than the
            network, or ``extra_spaces`` that are not spaces or reuse a reserved key.
    """

    def __init__(self, net, *, mode: str = "padded",
                 extra_spaces: dict[str, spaces.Space] | None = None,
                 max_nodes: int | None = None, max_edges: int | None = None,
                 max_groups: int | None = None, importance: str | None = None):
        check_choice(mode, ("padded", "graph"), "mode")
        extra = dict(extra_spaces or {})
        reserved = set(PADDED_KEYS + OPTIONAL_KEYS) if mode == "padded" else {"graph"}
        for key, space in extra.items():
            if not isinstance(space, spaces.Space) or key in reserved:
                raise InvalidArgumentError(
                    f"extra_spaces[{key!r}] must be a gymnasium space under a key other than "
                    f"{sorted(reserved)}; got {type(space).__name__}")
        topo = net.topology
        self.net, self.topology, self.mode, self.extra_spaces = net, topo, mode, extra
        self.num_nodes, self.num_edges = topo.num_nodes, topo.num_edges
        self.max_nodes = check_size(max_nodes, "max_nodes", self.num_nodes, "nodes")
        self.max_edges = check_size(max_edges, "max_edges", max(self.num_edges, 1), "edges")
        self.num_groups = len(net.groups)
        self.max_groups = check_size(max_groups, "max_groups", max(self.num_groups, 1),
                                     "prunable groups")
        self._node_macs = NodeMacs(net, topo, importance)
        self._prepare(net, topo)
        self.space = self._make_space()

    # -- static part ----------------------------------------------------------------------
    def _prepare(self, net, topo) -> None:
        n, e, big_n = self.num_nodes, self.num_edges, self.max_nodes
        groups = net.groups
        self._group_index = np.array([g.index for g in groups], dtype=np.int64)
        self._group_size = np.array([g.size for g in groups], dtype=np.float64)
        self._lost = np.zeros(len(net.all_groups), dtype=np.float64)
        # one product prices input and output channels at once: rows 0..N-1 in, N..2N-1 out
        self._owner = np.concatenate([topo.in_owner, topo.out_owner]).astype(np.float64)
        self._chans = np.concatenate([topo.in_channels, topo.out_channels]).astype(np.float64)
        self._inv_chans = 1.0 / np.maximum(self._chans, 1.0)
        self._c_in, self._c_out = self._chans[:n], self._chans[n:]
        # (G_all, N, 2): per group, whether it owns each node's input / output channels
        self._decided = np.stack([topo.in_owner.T > 0, topo.out_owner.T > 0], 2).astype(
            np.float32)
        self._in_scales = topo.in_scales.astype(np.float64)
        base_macs = max(int(net.base_macs), 1)
        macs = np.zeros(n)
        macs[self._node_macs.nodes] = self._node_macs.macs(self._group_size) / base_macs
        self._base_macs = base_macs
        self._p_io = topo.params_io / max(topo.base_params, 1)
        self._p_o = topo.params_o / max(topo.base_params, 1)
        # parameters of a node that no channel decides (e.g. a scalar) are always kept
        self._p_fixed = (topo.params - topo.params_io - topo.params_o) / max(topo.base_params, 1)

        feats = np.zeros((big_n, NUM_NODE_FEATURES), dtype=np.float32)
        feats[np.arange(n), topo.op_type.astype(np.int64)] = 1.0
        col = len(OP_TYPES)
        w_norm = np.zeros(n)
        for t in np.unique(topo.op_type):
            same = topo.op_type == t
            top = topo.weight_mean_abs[same].max()
            w_norm[same] = topo.weight_mean_abs[same] / top if top > 0 else 0.0
        prunable_id = np.zeros(len(net.all_groups) + 1)
        prunable_id[self._group_index] = (np.arange(len(groups)) + 1) / max(len(groups), 1)
        static = [
            _log_channels(self._c_in), _log_channels(self._c_out),
            1.0 - 1.0 / np.maximum(topo.kernel, 1), 1.0 - 1.0 / np.maximum(topo.stride, 1),
            np.log2(1.0 + topo.spatial) / np.log2(1.0 + max(topo.input_spatial, 1)),
            macs, topo.params / max(topo.base_params, 1), w_norm, topo.weight_dispersion,
            topo.depth / max(int(topo.depth.max()), 1), prunable_id[topo.out_group],
        ]
        feats[:n, col:col + len(static)] = np.clip(np.stack(static, 1), 0.0, 1.0)
        self._static = feats

        index_dtype = np.int16 if big_n <= np.iinfo(np.int16).max + 1 else np.int32
        self._index_dtype = index_dtype
        self._edge_index = np.zeros((2, self.max_edges), dtype=index_dtype)
        self._edge_index[:, :e] = topo.edge_index
        self._edge_type = np.zeros(self.max_edges, dtype=np.int8)
        self._edge_type[:e] = topo.edge_type
        self._node_mask = np.zeros(big_n, dtype=np.int8)
        self._node_mask[:n] = 1
        self._edge_mask = np.zeros(self.max_edges, dtype=np.int8)
        self._edge_mask[:e] = 1
        self._block = np.full(big_n, -1, dtype=np.int16 if index_dtype == np.int16 else np.int32)
        self._block[:n] = topo.block
        prunable = np.full(len(net.all_groups) + 1, -1, dtype=np.int64)  # all_groups -> groups
        prunable[self._group_index] = np.arange(len(groups))
        self._group = np.full(big_n, -1, dtype=np.int16 if self.max_groups <= 32_768
                              else np.int32)
        self._group[:n] = prunable[topo.out_group]  # out_group -1 reads the trailing -1
        self._graph_links = topo.edge_index.T.astype(np.int64)
        self._graph_edges = topo.edge_type.astype(np.int64)

    def _make_space(self) -> spaces.Space:
        big_n, big_e, f = self.max_nodes, self.max_edges, NUM_NODE_FEATURES
        if self.mode == "graph":
            low = np.concatenate([np.zeros(f), -np.ones(NUM_GLOBAL_FEATURES)]).astype(np.float32)
            node_space = spaces.Box(low, np.ones_like(low), dtype=np.float32)
            graph = spaces.Graph(node_space=node_space, edge_space=spaces.Discrete(len(EDGE_TYPES)))
            return spaces.Dict({"graph": graph, **self.extra_spaces}) if self.extra_spaces \
                else graph
        entries = {
            "node_features": spaces.Box(0.0, 1.0, (big_n, f), dtype=np.float32),
            "edge_index": spaces.Box(0, big_n - 1, (2, big_e), dtype=self._index_dtype),
            "edge_type": spaces.Box(0, len(EDGE_TYPES) - 1, (big_e,), dtype=np.int8),
            "node_mask": spaces.Box(0, 1, (big_n,), dtype=np.int8),
            "edge_mask": spaces.Box(0, 1, (big_e,), dtype=np.int8),
            "block": spaces.Box(-1, big_n - 1, (big_n,), dtype=self._block.dtype),
            "group": spaces.Box(-1, self.max_groups - 1, (big_n,), dtype=self._group.dtype),
            "globals": spaces.Box(-1.0, 1.0, (NUM_GLOBAL_FEATURES,), dtype=np.float32),
        }
        return spaces.Dict({**entries, **self.extra_spaces})

    # -- per step -------------------------------------------------------------------------
    def node_features(self, keep_counts, current_group: int = -1) -> np.ndarray:
        """``(max_nodes, F)`` float32 node features for a keep state (see :data:`NODE_FEATURES`)."""
        keep = np.asarray(keep_counts)
        if keep.shape != self._group_size.shape:
            raise InvalidArgumentError(
                f"keep_counts has shape {keep.shape}; expected ({len(self._group_size)},): one "
                "kept-channel count per prunable group (net.groups)")
        frac = keep / self._group_size
        if not (frac.min() > 0 and frac.max() <= 1):
            raise InvalidArgumentError(
                "keep_counts must lie in [1, group size] for every group; got "
                f"{keep.tolist()} for sizes {self._group_size.astype(int).tolist()}")
        if not -1 <= current_group < len(self._group_size):
            raise InvalidArgumentError(
                f"current_group={current_group} must be -1 (none) or an index into net.groups "
                f"(0..{len(self._group_size) - 1})")
        n = self.num_nodes
        lost = self._lost.copy()
        lost[self._group_index] = 1.0 - frac
        chans = self._chans - self._owner @ lost  # input then output channels of every node
        kept = chans * self._inv_chans
        kept_in, kept_out = kept[:n], kept[n:]
        scale_in = 1.0 + self._in_scales * (kept_in - 1.0)  # kept_in where weights read it
        feats = self._static.copy()
        dyn = feats[:n, _DYNAMIC]
        dyn[:, 0:2] = (np.log2(1.0 + chans) / _CHANNEL_SCALE).reshape(2, n).T
        dyn[:, 2:4] = kept.reshape(2, n).T
        dyn[:, 4] = 0.0
        dyn[self._node_macs.nodes, 4] = self._node_macs.macs(keep) / self._base_macs
        dyn[:, 5] = (self._p_io * scale_in + self._p_o) * kept_out + self._p_fixed
        if current_group >= 0:
            dyn[:, 6:8] = self._decided[self._group_index[current_group]]
        np.minimum(np.maximum(dyn, 0.0, out=dyn), 1.0, out=dyn)  # float rounding stays inside
        return feats

    def encode(self, keep_counts, *, current_group: int = -1, global_features,
               extras: dict[str, np.ndarray] | None = None):
        """The observation of a keep state.

        Args:
            keep_counts: kept channels per prunable group (``net.groups`` order); excluded
                groups are always full.
            current_group: index into ``net.groups`` of the group decided this step, or -1.
            global_features: the :data:`NUM_GLOBAL_FEATURES` values of
                :data:`GLOBAL_FEATURES`; clipped to [-1, 1].
            extras: one array per ``extra_spaces`` key, merged verbatim.

        Returns:
            A member of :attr:`space` (a dict of arrays, a ``GraphInstance``, or a dict
            holding ``"graph"``).
        """
        glob = np.array(global_features, dtype=np.float32)
        if glob.shape != (NUM_GLOBAL_FEATURES,) or not np.isfinite(glob).all():
            raise InvalidArgumentError(
                f"global_features must be {NUM_GLOBAL_FEATURES} finite numbers "
                f"({', '.join(GLOBAL_FEATURES)}); got {glob.tolist()}")
        np.minimum(np.maximum(glob, -1.0, out=glob), 1.0, out=glob)
        extras = extras or {}
        if extras.keys() != self.extra_spaces.keys():
            raise InvalidArgumentError(
                f"extras has keys {sorted(extras)}; the encoder was built with extra_spaces "
                f"{sorted(self.extra_spaces)}: pass exactly one array for each")
        feats = self.node_features(keep_counts, current_group)
        if self.mode == "graph":
            nodes = np.concatenate(
                [feats[: self.num_nodes], np.broadcast_to(glob, (self.num_nodes, glob.size))], 1)
            graph = GraphInstance(nodes, self._graph_edges.copy(), self._graph_links.copy())
            return {"graph": graph, **extras} if self.extra_spaces else graph
        return {"node_features": feats, "edge_index": self._edge_index.copy(),
                "edge_type": self._edge_type.copy(), "node_mask": self._node_mask.copy(),
                "edge_mask": self._edge_mask.copy(), "block": self._block.copy(),
                "group": self._group.copy(), "globals": glob, **extras}

