"""Topology and observations: real data flow, group ownership, spaces, encode, to_pyg."""

from __future__ import annotations

import pickle
import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.spaces import GraphInstance
from torch import nn

from prune_gym.errors import InvalidArgumentError
from prune_gym.models import get_model
from prune_gym.network import PrunableNetwork, PruningWarning
from prune_gym.observations import (
    DYNAMIC_FEATURES,
    NODE_FEATURES,
    NUM_GLOBAL_FEATURES,
    NUM_NODE_FEATURES,
    ObservationEncoder,
)
from prune_gym.pyg import to_pyg
from prune_gym.topology import EDGE_TYPES, OP_INDEX, OP_TYPES

GLOBALS = np.array([0.5, 0.25, 0.1, 0.9], dtype=np.float32)
DYN = [NODE_FEATURES.index(f) for f in DYNAMIC_FEATURES]
STATIC = [i for i in range(NUM_NODE_FEATURES) if i not in DYN]


class ConcatNet(nn.Module):
    """Two branches concatenated, then a conv reading both: a concat with two inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(12)
        self.c = nn.Conv2d(12, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), torch.relu(self.b(x))], 1)
        y = torch.relu(self.c(torch.relu(self.bn(y))))
        return self.fc(torch.flatten(y, 1))


def _net(name: str, **kw) -> PrunableNetwork:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        if name == "concat":
            return PrunableNetwork(ConcatNet(), torch.randn(1, 3, 8, 8), **kw)
        shape = (1, 1, 8, 8) if name == "digits_cnn" else (1, 3, 32, 32)
        return PrunableNetwork(get_model(name), torch.randn(*shape), **kw)


@pytest.fixture(scope="module")
def nets() -> dict[str, PrunableNetwork]:
    # Verification is the engine's business (tested there); skipping it keeps this fast.
    return {n: _net(n, verify=False) for n in
            ("resnet20", "mobilenetv2", "vgg16_bn", "digits_cnn", "concat")}


def _half(net: PrunableNetwork) -> np.ndarray:
    return np.array([max(1, g.size // 2) for g in net.groups])


def _full(net: PrunableNetwork) -> np.ndarray:
    return np.array([g.size for g in net.groups])


def _node(topo, name: str) -> int:
    return topo.names.index(name)


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vgg16_bn", "digits_cnn", "concat"])
def test_graph_is_the_data_flow(nets, name: str) -> None:
    net = nets[name]
    topo = net.topology
    n, e = topo.num_nodes, topo.num_edges
    assert topo.op_type[0] == OP_INDEX["input"] and topo.names[0] == "input"
    assert topo.edge_index.dtype == np.int32 and topo.edge_index.shape == (2, e)
    assert ((topo.edge_index >= 0) & (topo.edge_index < n)).all()
    assert (topo.edge_index[0] < topo.edge_index[1]).all()  # forward order, no self loops
    assert n - 1 <= e <= 2 * n
    has_input = np.zeros(n, dtype=bool)
    has_input[topo.edge_index[1]] = True
    assert has_input[1:].all()  # every node but the input is fed by something
    layers = {m for m, mod in net.model.named_modules()
              if isinstance(mod, (nn.Conv2d, nn.Linear))}
    assert layers <= set(topo.module)
    assert topo.params.sum() == net.base_params
    for g in net.all_groups:  # group ownership: a member conv's output channels are its group's
        for m in g.members:
            node = topo.module.index(m.module)
            if m.kind == "out" and OP_TYPES[topo.op_type[node]] in ("conv", "depthwise_conv"):
                assert topo.out_group[node] == g.index
            if m.kind == "in" and len({g2.index for g2 in net.all_groups for m2 in g2.members
                                       if m2.module == m.module and m2.kind == "in"}) == 1:
                assert topo.in_group[node] == g.index


def test_resnet20_residual_adds_and_option_a_shortcut(nets) -> None:
    topo = nets["resnet20"].topology
    adds = np.flatnonzero(topo.op_type == OP_INDEX["add"])
    assert len(adds) == 9
    for a in adds:
        into = topo.edge_index[1] == a
        assert into.sum() == 2
        assert sorted(topo.edge_type[into].tolist()) == [0, 1]  # main path + skip
        main = topo.edge_index[0, into & (topo.edge_type == 0)][0]
        assert topo.names[main].endswith("bn2")
    pads = np.flatnonzero(topo.op_type == OP_INDEX["pad"])
    assert [topo.names[p] for p in pads] == ["layer2.0.shortcut", "layer3.0.shortcut"]
    assert (topo.op_type == OP_INDEX["slice"]).sum() == 4  # x[:, :, ::2, ::2] twice
    skip_sources = topo.edge_index[0, topo.edge_type == 1]
    assert set(pads) <= set(skip_sources.tolist())
    assert topo.block_names == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    block = topo.block_names.index("layer2.0")
    for name in ("layer2.0.conv1", "layer2.0.shortcut", "layer2.0/add_3", "layer2.0.relu2"):
        assert topo.block[_node(topo, name)] == block
    assert topo.block[_node(topo, "conv1")] == -1 and topo.block[_node(topo, "linear")] == -1
    assert topo.stride[_node(topo, "layer2.0.conv1")] == 2
    assert topo.kernel[_node(topo, "layer2.0.conv1")] == 3


def test_mobilenetv2_depthwise_and_inverted_residuals(nets) -> None:
    topo = nets["mobilenetv2"].topology
    dw = np.flatnonzero(topo.op_type == OP_INDEX["depthwise_conv"])
    assert len(dw) == 17
    assert all(topo.module[d].endswith("conv.1.0") or topo.module[d] == "features.1.conv.0.0"
               for d in dw)
    assert (topo.in_group[dw] == topo.out_group[dw]).all()  # a depthwise conv keeps its group
    assert not topo.in_scales[dw].any()
    adds = np.flatnonzero(topo.op_type == OP_INDEX["add"])
    assert len(adds) == 10
    for a in adds:
        into = topo.edge_index[1] == a
        assert into.sum() == 2 and (topo.edge_type[into] == 1).sum() == 1
        assert topo.block[a] >= 0


def test_concat_has_several_inputs_and_splits_ownership(nets) -> None:
    net = nets["concat"]
    topo = net.topology
    (cat,) = np.flatnonzero(topo.op_type == OP_INDEX["concat"])
    into = topo.edge_index[1] == cat
    assert into.sum() == 2 and (topo.edge_type[into] == EDGE_TYPES.index("concat")).all()
    assert topo.in_channels[cat] == 12 and topo.out_group[cat] == -1
    c = _node(topo, "c")
    assert topo.in_group[c] == -1  # reads channels of two groups
    assert topo.in_owner[c].tolist()[:2] == [8.0, 4.0]


def test_vgg_is_a_chain_without_blocks(nets) -> None:
    topo = nets["vgg16_bn"].topology
    assert topo.num_edges == topo.num_nodes - 1
    assert (topo.edge_type == 0).all() and (topo.block == -1).all()
    assert (topo.op_type == OP_INDEX["conv"]).sum() == 13


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "digits_cnn"])
def test_padded_space_dtypes_and_contains(nets, name: str) -> None:
    enc = ObservationEncoder(nets[name])
    obs = enc.encode(_half(nets[name]), current_group=0, global_features=GLOBALS)
    assert enc.space.contains(obs)
    n, e = enc.topology.num_nodes, enc.topology.num_edges
    want = {"node_features": (np.float32, (n, NUM_NODE_FEATURES)),
            "edge_index": (np.int16, (2, e)), "edge_type": (np.int8, (e,)),
            "node_mask": (np.int8, (n,)), "edge_mask": (np.int8, (e,)),
            "block": (np.int16, (n,)), "group": (np.int16, (n,)),
            "globals": (np.float32, (NUM_GLOBAL_FEATURES,))}
    assert {k: (v.dtype, v.shape) for k, v in obs.items()} == {
        k: (np.dtype(d), s) for k, (d, s) in want.items()}
    assert all(enc.space[k].dtype == v.dtype for k, v in obs.items())
    assert obs["node_mask"].all() and obs["edge_mask"].all()
    np.testing.assert_array_equal(obs["globals"], GLOBALS)


def test_features_follow_the_keep_state_and_nothing_else(nets) -> None:
    net = nets["digits_cnn"]
    enc = ObservationEncoder(net)
    full = enc.encode(_full(net), global_features=GLOBALS)
    again = enc.encode(_full(net), global_features=GLOBALS)
    for k in full:
        np.testing.assert_array_equal(full[k], again[k])
    keep = _full(net)
    keep[1] = 8  # group 1 (features.3, 32 channels) keeps a quarter
    pruned = enc.encode(keep, global_features=GLOBALS)
    np.testing.assert_array_equal(full["node_features"][:, STATIC],
                                  pruned["node_features"][:, STATIC])
    changed = np.flatnonzero((full["node_features"] != pruned["node_features"]).any(1))
    names = [enc.topology.names[i] for i in changed]
    assert names == ["features.3", "features.4", "features.5", "features.6", "features.7"]
    f = pruned["node_features"]
    col = NODE_FEATURES.index
    conv3, conv7 = _node(enc.topology, "features.3"), _node(enc.topology, "features.7")
    assert f[conv3, col("kept_out")] == pytest.approx(0.25)
    assert f[conv3, col("kept_in")] == 1.0 and f[conv7, col("kept_in")] == pytest.approx(0.25)
    assert f[conv3, col("out_channels_now")] == pytest.approx(np.log2(9) / 16)
    assert f[conv3, col("out_channels")] == pytest.approx(np.log2(33) / 16)
    for key in ("edge_index", "edge_type", "block"):
        np.testing.assert_array_equal(full[key], pruned[key])


def test_decided_group_flags(nets) -> None:
    net = nets["resnet20"]
    enc = ObservationEncoder(net)
    topo = enc.topology
    group = 3
    obs = enc.encode(_full(net), current_group=group, global_features=GLOBALS)
    out = obs["node_features"][:, NODE_FEATURES.index("decided_out")] > 0
    inp = obs["node_features"][:, NODE_FEATURES.index("decided_in")] > 0
    gi = net.groups[group].index
    assert out.tolist() == (topo.out_owner[:, gi] > 0).tolist()
    root = topo.module.index(net.groups[group].name)
    assert np.flatnonzero(out)[0] == root and inp[topo.module.index(
        net.groups[group].name.replace("conv1", "conv2"))]
    none = enc.encode(_full(net), global_features=GLOBALS)["node_features"]
    assert not none[:, DYN[-2:]].any()


@pytest.mark.parametrize("name", ["digits_cnn", "vgg16_bn", "mobilenetv2", "concat"])
def test_current_shares_price_the_keep_state_like_the_cost_model(nets, name: str) -> None:
    net = nets[name]
    enc = ObservationEncoder(net)
    keep = _half(net)
    f = enc.encode(keep, global_features=GLOBALS)["node_features"].astype(np.float64)
    macs = f[:, NODE_FEATURES.index("macs_share_now")].sum() * net.base_macs
    params = f[:, NODE_FEATURES.index("params_share_now")].sum() * net.base_params
    assert macs == pytest.approx(net.macs(keep.tolist()), rel=1e-5)
    assert params == pytest.approx(net.params(keep.tolist()), rel=1e-5)


def _layer_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """MACs of every conv/linear layer of ``model``, counted on its forward (rows x weight)."""
    names = {m: n for n, m in model.named_modules()}
    macs: dict[str, int] = {}

    def hook(module, args, out) -> None:
        channels = out.shape[1] if isinstance(module, nn.Conv2d) else out.shape[-1]
        macs[names[module]] = macs.get(names[module], 0) + \
            out.numel() // channels * module.weight.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(example)
    for h in handles:
        h.remove()
    return macs


def test_node_macs_are_the_cost_models_on_resnet56() -> None:
    """One way to count MACs: each node's share is what the exported pruned layer costs,
    and the shares sum to the engine's price of the keep state."""
    net = _net("resnet56")
    enc = ObservationEncoder(net)
    rng = np.random.default_rng(0)
    full = _full(net)
    static = enc.encode(full, global_features=GLOBALS)["node_features"]
    share, share_now = NODE_FEATURES.index("macs_share"), NODE_FEATURES.index("macs_share_now")
    layer_of = {n: enc.topology.module[n] for n in range(enc.num_nodes)}
    for keep in (full, _half(net), rng.integers(1, full + 1), np.ones_like(full)):
        f = enc.encode(keep, global_features=GLOBALS)["node_features"].astype(np.float64)
        assert f[:, share_now].sum() * net.base_macs == pytest.approx(net.macs(keep.tolist()),
                                                                       rel=1e-6)
        exported = _layer_macs(net.export(keep.tolist()), net.example_inputs[0])
        counted = {}
        for n in np.flatnonzero(f[:, share_now]):
            counted[layer_of[n]] = f[n, share_now] * net.base_macs
        assert counted.keys() == exported.keys()  # every conv/linear, and nothing else
        for layer, macs in exported.items():
            assert counted[layer] == pytest.approx(macs, rel=1e-5), layer
    np.testing.assert_array_equal(static[:, share], static[:, share_now])


def test_excluded_groups_stay_full() -> None:
    net = _net("digits_cnn", verify=False)
    net.all_groups[1].prunable = False  # as verification would mark it
    enc = ObservationEncoder(net)
    f = enc.encode(np.array([1, 1]), global_features=GLOBALS)["node_features"]
    conv3 = _node(enc.topology, "features.3")
    assert f[conv3, NODE_FEATURES.index("kept_out")] == 1.0
    assert f[conv3, NODE_FEATURES.index("group_id")] == 0.0


def test_graph_mode_and_extra_spaces(nets) -> None:
    net = nets["resnet20"]
    enc = ObservationEncoder(net, mode="graph")
    assert isinstance(enc.space, spaces.Graph)
    obs = enc.encode(_half(net), current_group=1, global_features=GLOBALS)
    assert isinstance(obs, GraphInstance) and enc.space.contains(obs)
    assert obs.nodes.shape == (enc.topology.num_nodes, NUM_NODE_FEATURES + NUM_GLOBAL_FEATURES)
    np.testing.assert_array_equal(obs.nodes[:, NUM_NODE_FEATURES:], np.tile(GLOBALS, (76, 1)))
    extra = {"channels": spaces.Box(0.0, 1.0, (4, 3), dtype=np.float32)}
    enc = ObservationEncoder(net, mode="graph", extra_spaces=extra)
    value = {"channels": np.zeros((4, 3), dtype=np.float32)}
    obs = enc.encode(_half(net), global_features=GLOBALS, extras=value)
    assert isinstance(enc.space, spaces.Dict) and enc.space.contains(obs)
    padded = ObservationEncoder(net, extra_spaces=extra)
    obs = padded.encode(_half(net), global_features=GLOBALS, extras=value)
    assert padded.space.contains(obs) and obs["channels"] is value["channels"]
    assert to_pyg(enc.encode(_half(net), global_features=GLOBALS, extras=value)).num_nodes == 76


def test_max_nodes_padding_and_size(nets) -> None:
    net = nets["digits_cnn"]
    topo = net.topology
    enc = ObservationEncoder(net, max_nodes=40, max_edges=50)
    obs = enc.encode(_half(net), global_features=GLOBALS)
    assert enc.space.contains(obs)
    assert obs["node_features"].shape == (40, NUM_NODE_FEATURES)
    assert obs["node_mask"].sum() == topo.num_nodes and obs["edge_mask"].sum() == topo.num_edges
    assert not obs["node_features"][topo.num_nodes:].any()
    assert (obs["block"][topo.num_nodes:] == -1).all()
    exact = ObservationEncoder(net).encode(_half(net), global_features=GLOBALS)
    np.testing.assert_array_equal(obs["node_features"][: topo.num_nodes], exact["node_features"])
    assert sum(v.nbytes for v in exact.values()) < 4096
    assert ObservationEncoder(net, max_nodes=40_000).space["edge_index"].dtype == np.int32


def test_to_pyg_single_and_batched_sb3_style(nets) -> None:
    big, small = nets["resnet20"], nets["digits_cnn"]
    size = {"max_nodes": big.topology.num_nodes, "max_edges": big.topology.num_edges}
    encs = [ObservationEncoder(big, **size), ObservationEncoder(small, **size)]
    singles = [encs[0].encode(_half(big), current_group=2, global_features=GLOBALS),
               encs[1].encode(_full(small), current_group=1, global_features=GLOBALS * 0),
               encs[0].encode(_full(big), global_features=-GLOBALS)]
    one = to_pyg(singles[1])
    assert one.num_graphs == 1 and one.num_nodes == small.topology.num_nodes
    np.testing.assert_array_equal(one.edge_index.numpy(), small.topology.edge_index)
    assert one.edge_index.dtype == torch.long and one.edge_attr.shape == (one.num_edges, 3)
    stacked = {k: torch.as_tensor(np.stack([o[k] for o in singles])).float() for k in singles[0]}
    batch = to_pyg(stacked)  # exactly what SB3 hands a features extractor
    nodes = [s.topology.num_nodes for s in (big, small, big)]
    edges = [s.topology.num_edges for s in (big, small, big)]
    assert batch.num_graphs == 3 and batch.num_nodes == sum(nodes)
    assert batch.num_edges == sum(edges) and batch.edge_index.max() < sum(nodes)
    assert torch.bincount(batch.batch).tolist() == nodes
    assert batch.globals.shape == (3, NUM_GLOBAL_FEATURES)
    for i, obs in enumerate(singles):
        ref, got = to_pyg(obs), batch.get_example(i)
        for key in ("x", "edge_index", "edge_type", "block", "current", "globals",
                    "current_node"):
            assert torch.equal(ref[key], got[key]), key
    assert batch.current_node.tolist() == [
        big.topology.module.index(big.groups[2].name),
        small.topology.module.index(small.groups[1].name), -1]
    assert batch.block_id.max() + 1 == len(batch.block_batch)
    assert torch.equal(batch.block_batch[batch.block_id], batch.batch)


def test_topology_pickles_with_the_network(nets) -> None:
    net = nets["digits_cnn"]
    topo = net.topology
    clone = pickle.loads(pickle.dumps(net))
    with mock.patch("prune_gym.topology.build_topology", side_effect=AssertionError("traced")):
        assert clone.topology.names == topo.names  # kept, not traced again
    np.testing.assert_array_equal(clone.topology.out_owner, topo.out_owner)
    enc = pickle.loads(pickle.dumps(ObservationEncoder(net, mode="graph")))
    assert enc.space.contains(enc.encode(_half(net), global_features=GLOBALS))


def test_bad_arguments_are_named(nets) -> None:
    net = nets["digits_cnn"]
    n = net.topology.num_nodes
    with pytest.raises(InvalidArgumentError, match="mode"):
        ObservationEncoder(net, mode="dense")
    with pytest.raises(InvalidArgumentError, match=f"max_nodes.*>= {n}"):
        ObservationEncoder(net, max_nodes=n - 1)
    with pytest.raises(InvalidArgumentError, match="max_edges"):
        ObservationEncoder(net, max_edges=2)
    with pytest.raises(InvalidArgumentError, match="extra_spaces"):
        ObservationEncoder(net, extra_spaces={"globals": spaces.Discrete(2)})
    enc = ObservationEncoder(net)
    with pytest.raises(InvalidArgumentError, match="keep_counts"):
        enc.encode([1, 2], global_features=GLOBALS)
    with pytest.raises(InvalidArgumentError, match="keep_counts"):
        enc.encode([0, 1, 1], global_features=GLOBALS)
    with pytest.raises(InvalidArgumentError, match="current_group"):
        enc.encode(_full(net), current_group=3, global_features=GLOBALS)
    with pytest.raises(InvalidArgumentError, match="global_features"):
        enc.encode(_full(net), global_features=GLOBALS[:3])
    with pytest.raises(InvalidArgumentError, match="extras"):
        enc.encode(_full(net), global_features=GLOBALS, extras={"x": np.zeros(1)})
    with pytest.raises(InvalidArgumentError, match="padded observation"):
        to_pyg({"node_features": np.zeros((2, 3))})
