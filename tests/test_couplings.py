"""Couplings Torch-Pruning cannot follow alone: the option-A pad shortcut, grouped convs."""

from __future__ import annotations

import ast
import inspect
import warnings

import numpy as np
import torch
from torch import nn

from prune_gym import PrunableNetwork, network, topology, verify
from prune_gym.models import PadShortcut, resnet56
from prune_gym.network import PruningWarning
from prune_gym.pruners import PadShortcutPruner
from prune_gym.verify import measure
from tests.toy_models import GroupedNet, SharedGroupedNet, randomised

STREAMS = ("conv1", "layer2.0.conv2", "layer3.0.conv2")




def _check_export(net: PrunableNetwork, keep, x: torch.Tensor) -> nn.Module:
    """The exported network runs, keeps the output shape, costs exactly what the cost model
    says and computes what the masked working copy computes."""
    pruned = net.export(keep).eval()
    out, macs, params = measure(pruned, (x,))
    assert tuple(out.shape) == net.output_shape
    assert (macs, params) == (net.macs(keep), net.params(keep))
    with net.masked(keep) as masked, torch.no_grad():
        torch.testing.assert_close(masked(x), out, rtol=1e-4, atol=1e-5)
    return pruned


def test_pad_shortcut_pruner_keeps_each_channel_on_the_channel_it_was_added_to():
    sc = PadShortcut(6, 12, stride=2)  # input channel j lands on output channel j + 3
    x = torch.randn(2, 6, 4, 4)
    full = sc(x)
    pruner = PadShortcutPruner()
    pruner.prune_in_channels(sc, [1, 4])  # inputs kept: 0, 2, 3, 5
    pruner.prune_out_channels(sc, [0, 3, 7, 11])  # outputs kept: 1, 2, 4, 5, 6, 8, 9, 10
    assert (sc.in_planes, sc.out_planes) == (4, 8)
    kept_in, kept_out = [0, 2, 3, 5], [1, 2, 4, 5, 6, 8, 9, 10]
    x_zeroed = x.clone()
    x_zeroed[:, [1, 4]] = 0  # a pruned input contributes nothing
    expected = PadShortcut(6, 12, stride=2)(x_zeroed)[:, kept_out]
    got = sc(x[:, kept_in])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # input 0 went to output 3, which is pruned: dropped, not moved to another channel
    assert not torch.equal(full[:, kept_out], got)
    assert sc.dst.tolist() == [3, 4, 5]  # inputs 2, 3, 5 -> old outputs 5, 6, 8 -> new 3, 4, 5


def test_channel_pad_gradient_is_the_adjoint_of_the_pad():
    sc = PadShortcut(3, 7, stride=1).double()
    x = torch.randn(2, 3, 3, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(sc, (x,))
    # a half-precision input (as under autocast) meets the float32 gate: output follows x
    half = PadShortcut(3, 7, stride=1)(x.detach().bfloat16())
    assert half.dtype == torch.bfloat16 and torch.equal(half[:, 2:5], x.detach().bfloat16())


def test_resnet56_with_residual_streams_pruned_exports_and_matches():
    torch.manual_seed(0)
    model = randomised(resnet56())
    x = torch.randn(2, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        net = PrunableNetwork(model, x)
    stream = [i for i, g in enumerate(net.groups) if g.name in STREAMS]
    assert len(stream) == 3
    rng = np.random.default_rng(0)
    for trial in range(4):
        keep = [g.size for g in net.groups]
        for i in stream:  # random channel sets on the streams only, then on every group
            keep[i] = np.zeros(net.groups[i].size, dtype=bool)
            keep[i][rng.choice(net.groups[i].size, rng.integers(1, net.groups[i].size),
                               replace=False)] = True
        if trial >= 2:
            keep = [k if isinstance(k, np.ndarray) else int(rng.integers(1, g.size + 1))
                    for k, g in zip(keep, net.groups)]
        pruned = _check_export(net, keep, x)
        masks = net.masks(keep)
        widths = [int(masks[i].sum()) for i in stream]
        assert pruned.conv1.out_channels == widths[0] and pruned.linear.in_features == widths[2]
        for stage, (before, after) in enumerate(zip(widths, widths[1:]), start=2):
            sc = pruned.get_submodule(f"layer{stage}.0.shortcut")
            assert (sc.in_planes, sc.out_planes) == (before, after)
            # a kept input lands on the output channel it was padded onto, renumbered
            old_in = np.flatnonzero(masks[stream[stage - 2]])
            old_out = np.flatnonzero(masks[stream[stage - 1]])
            front = net.groups[stream[stage - 1]].size // 4
            expected = {j: int(np.searchsorted(old_out, old_in[j] + front))
                        for j in range(len(old_in)) if old_in[j] + front in set(old_out)}
            assert dict(zip(sc.src.tolist(), sc.dst.tolist())) == expected


def test_grouped_conv_is_pruned_balanced_across_its_conv_groups():
    torch.manual_seed(0)
    model = randomised(GroupedNet())
    x = torch.randn(2, 3, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        net = PrunableNetwork(model, x)
    by_name = {g.name: i for i, g in enumerate(net.groups)}
    assert not net.excluded_groups and {"reduce.0", "grouped.0"} <= set(by_name)
    # a group acts on positions within a conv group: 32 channels / 4 conv groups
    assert net.groups[by_name["reduce.0"]].size == net.groups[by_name["grouped.0"]].size == 8
    rng = np.random.default_rng(1)
    for _ in range(4):
        keep = [int(rng.integers(1, g.size + 1)) for g in net.groups]
        pruned = _check_export(net, keep, x)
        conv = pruned.grouped[0]
        k_in, k_out = keep[by_name["reduce.0"]], keep[by_name["grouped.0"]]
        assert conv.groups == 4 and (conv.in_channels, conv.out_channels) == (4 * k_in, 4 * k_out)
        assert conv.weight.shape[:2] == (4 * k_out, k_in)  # the same count in every conv group
        # the exported conv's weights are the original ones at the kept positions of each group
        w = model.grouped[0].weight
        kept_in = net.resolve(keep)[by_name["reduce.0"]]
        kept_out = net.resolve(keep)[by_name["grouped.0"]]
        rows = np.concatenate([b * 8 + kept_out for b in range(4)])
        torch.testing.assert_close(conv.weight, w[rows][:, kept_in], rtol=0, atol=0)
    # the ranking is over positions: each once
    assert sorted(net.ranking(by_name["grouped.0"]).tolist()) == list(range(8))


def test_a_tensor_read_by_two_grouped_convs_folds_to_their_common_block():
    torch.manual_seed(0)
    model = randomised(SharedGroupedNet())
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PruningWarning)
        net = PrunableNetwork(model, x)
    stem = next(i for i, g in enumerate(net.groups) if g.name == "stem.0")
    assert net.groups[stem].size == 4  # blocks of 4 (groups=4) and 8 (groups=2): gcd 4
    rng = np.random.default_rng(2)
    for _ in range(3):
        keep = [int(rng.integers(1, g.size + 1)) for g in net.groups]
        pruned = _check_export(net, keep, x)
        assert pruned.g4.in_channels == pruned.g2.in_channels == 4 * keep[stem]


def test_engine_modules_import_without_a_cycle_or_private_access():
    for module in (verify, topology):  # verify/topology import network for type hints only
        tree = ast.parse(inspect.getsource(module))
        runtime = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and n.module == "prune_gym.network"]
        guarded = [n for n in ast.walk(tree) if isinstance(n, ast.If)
                   and getattr(n.test, "id", "") == "TYPE_CHECKING"]
        inside = {id(x) for g in guarded for x in ast.walk(g)}
        assert all(id(n) in inside for n in runtime), module.__name__
        private = [n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id == "net"
                   and n.attr.startswith("_")]
        assert private == [], (module.__name__, private)
    assert network.PruningWarning is verify.PruningWarning
