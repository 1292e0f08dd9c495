"""PrunableNetwork: analysis, verification, masked == physical, closed-form cost == measured."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from prune_gym import PrunableNetwork
from prune_gym.errors import (
    InvalidArgumentError,
    KeepStateError,
    ModelAnalysisError,
    PruneGymError,
)
from prune_gym.models import digits_cnn, mobilenetv2, resnet20, resnet56, vgg16_bn
from prune_gym.network import PruningWarning
from prune_gym.verify import measure
from tests.toy_models import (
    ConcatNet,
    FunctionalReuseNet,
    GroupedNet,
    SENet,
    ShuffleNet,
    randomised,
)

CIFAR = (1, 3, 32, 32)
MODELS = {
    "resnet20": (resnet20, CIFAR),
    "resnet56": (resnet56, CIFAR),
    "vgg16_bn": (vgg16_bn, CIFAR),
    "mobilenetv2": (mobilenetv2, CIFAR),
    "digits_cnn": (digits_cnn, (1, 1, 8, 8)),
    "concat": (ConcatNet, (2, 3, 16, 16)),
    "squeeze_excite": (SENet, (2, 3, 16, 16)),
    "grouped_conv": (GroupedNet, (2, 3, 16, 16)),
    "functional_reuse": (FunctionalReuseNet, (2, 3, 16, 16)),
    "channel_shuffle": (ShuffleNet, (2, 3, 16, 16)),
}




def _analyse(name):
    factory, shape = MODELS[name]
    torch.manual_seed(0)
    model = randomised(factory())
    x = torch.randn(*shape)
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        net = PrunableNetwork(model, x)
    return model, x, before, net


@pytest.fixture(scope="module", params=sorted(MODELS))
def analysed(request):
    return (request.param, *_analyse(request.param))


def _random_keeps(net, n, seed=0):
    rng = np.random.default_rng(seed)
    keeps = [[int(rng.integers(1, g.size + 1)) for g in net.groups] for _ in range(n)]
    keeps.append([1 for _ in net.groups])  # the most aggressive state
    keeps.append([[int(i) for i in rng.choice(g.size, max(1, g.size // 3), replace=False)]
                  for g in net.groups])  # explicit index lists
    return keeps


def test_masked_equals_physical_and_cost_is_exact(analysed):
    name, model, x, before, net = analysed
    assert net.groups, f"{name}: no prunable group"
    for keep in _random_keeps(net, 3):
        pruned = net.export(keep).eval()
        out, macs, params = measure(pruned, (x,))
        assert net.macs(keep) == macs
        assert net.params(keep) == params
        with net.masked(keep) as masked, torch.no_grad():
            masked_out = masked(x)
        torch.testing.assert_close(masked_out, out, rtol=1e-3, atol=1e-4)
        # fewer parameters exactly when some channel goes (every group owns parameters)
        assert (params < net.base_params) == (not all(m.all() for m in net.masks(keep)))


def test_pruned_in_place_is_the_exported_network_and_is_undone(analysed):
    name, model, x, before, net = analysed
    working = {n: (p, p.detach().clone()) for n, p in net.model.named_parameters()}
    buffers = {n: b.clone() for n, b in net.model.named_buffers()}
    shapes = {n: dict(vars(m)) for n, m in net.model.named_modules()}
    for keep in _random_keeps(net, 2, seed=1):
        exported = net.export(keep).eval()
        with torch.no_grad():
            expected = exported(x)
        with net.pruned(keep) as pruned:
            out, macs, params = measure(pruned, (x,))
            assert (macs, params) == (net.macs(keep), net.params(keep))
            assert [tuple(p.shape) for p in pruned.parameters()] == [
                tuple(p.shape) for p in exported.parameters()]
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        # put back: the very same tensors, values, buffers and layer attributes
        for n, p in net.model.named_parameters():
            assert p is working[n][0] and torch.equal(p, working[n][1]), (name, n)
        assert all(torch.equal(b, buffers[n]) for n, b in net.model.named_buffers())
        assert {n: dict(vars(m)) for n, m in net.model.named_modules()} == shapes
    with pytest.raises(KeepStateError, match="entries"), net.pruned([1]):
        pass
    with net.pruned([1 for _ in net.groups]):
        with pytest.raises(RuntimeError, match="boom"):  # an error inside: still put back
            raise RuntimeError("boom")
    assert all(p is working[n][0] for n, p in net.model.named_parameters())


def test_full_keep_prices_the_original_model(analysed):
    name, model, x, before, net = analysed
    _, macs, params = measure(model, (x,))
    assert net.base_macs == macs and net.base_params == params


def test_original_model_is_never_modified(analysed):
    name, model, x, before, net = analysed
    keep = _random_keeps(net, 1)[0]
    net.export(keep)
    with net.masked(keep):
        pass
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training  # its mode is untouched too (it was put in eval above)


def test_restore_returns_working_copy_to_original_weights(analysed):
    name, model, x, before, net = analysed
    with torch.no_grad():
        reference = model(x)
    net.apply_masked([1 for _ in net.groups])
    net.restore()
    with torch.no_grad():
        torch.testing.assert_close(net.model(x), reference)


def test_classifier_is_never_pruned(analysed):
    name, model, x, before, net = analysed
    pruned = net.export([1 for _ in net.groups])
    with torch.no_grad():
        assert pruned.eval()(x).shape == model(x).shape
    classifier = net.ignored_layers[0]
    assert all(classifier != m.module or m.kind == "in" for g in net.groups for m in g.members)


def test_option_a_resnet_prunes_each_residual_stream():
    # one group per block (conv1's output) and one residual stream per stage: 9 + 3 = 12 on
    # ResNet-20, 27 + 3 = 30 on ResNet-56 (the streams were excluded before the pad pruner)
    for factory, inner in ((resnet20, 9), (resnet56, 27)):
        with warnings.catch_warnings():
            warnings.simplefilter("error", PruningWarning)
            net = PrunableNetwork(factory(), torch.randn(*CIFAR))
        per_stage = inner // 3
        streams = ["conv1", "layer2.0.conv2", "layer3.0.conv2"]
        assert len(net.groups) == inner + 3 and not net.excluded_groups
        assert sorted(g.name for g in net.groups) == sorted(
            streams + [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(per_stage)])
        by_name = {g.name: g for g in net.groups}
        assert [by_name[n].size for n in streams] == [16, 32, 64]
        # the shortcut's input side is in the stage before, its output side in the stage after
        sides = {(m.module, m.kind): g.name for g in net.groups for m in g.members
                 if m.module.endswith("shortcut")}
        assert sides == {("layer2.0.shortcut", "in"): "conv1",
                         ("layer2.0.shortcut", "out"): "layer2.0.conv2",
                         ("layer3.0.shortcut", "in"): "layer2.0.conv2",
                         ("layer3.0.shortcut", "out"): "layer3.0.conv2"}
        # every block of a stage adds onto its stream: all bn2 of stage s are in it
        for s, name in zip((1, 2, 3), streams):
            assert {f"layer{s}.{b}.bn2" for b in range(per_stage)} <= set(by_name[name].layers)


def test_channel_shuffle_group_is_excluded_with_a_reason():
    # The chunk before the shuffle needs equal halves (and Torch-Pruning would follow the
    # shuffle's view/transpose/reshape as if channels kept their order): the group search
    # stops at the split, and the two groups that reach it (the stem's, and the branch
    # output's, which comes back to it through the shuffle and the concatenation) are
    # excluded naming it; the groups inside the branch and after it stay prunable.
    _, _, _, net = _analyse("channel_shuffle")
    assert [g.name for g in net.excluded_groups] == ["stem.0", "branch.5"]
    assert all("channel split (SplitBackward0" in g.reason for g in net.excluded_groups)
    assert {g.name for g in net.groups} == {"branch.0", "head.0"}


def test_depthwise_and_concat_groups_are_prunable():
    _, _, _, mobile = _analyse("mobilenetv2")
    dw = [m for g in mobile.groups for m in g.members if "Depthwise" in m.handler.__qualname__]
    assert dw, "depthwise convolutions should be pruned with their expansion group"
    _, _, _, concat = _analyse("concat")
    by_name = {g.name: g for g in concat.groups}
    assert {"left.0", "right.0"} <= set(by_name)
    # each branch owns its slice of the concatenation that feeds "fuse": 6 + 10 channels
    fuse_in = {name: [m for m in by_name[name].members if (m.module, m.kind) == ("fuse.0", "in")]
               for name in ("left.0", "right.0")}
    assert fuse_in["left.0"][0].target_idx.tolist() == list(range(6))
    assert fuse_in["right.0"][0].target_idx.tolist() == list(range(6, 16))


def test_counts_keep_the_most_important_channels():
    _, _, _, net = _analyse("digits_cnn")
    group = net.groups[0]
    weakest = int(net.ranking(0)[-1])
    keep = [g.size for g in net.groups]
    keep[0] = group.size - 1
    assert weakest not in net.resolve(keep)[0]
    assert len(net.resolve(keep)[0]) == group.size - 1


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn_scale", "random", "taylor"])
def test_importance_criteria_rank_every_channel(criterion):
    torch.manual_seed(0)
    model = randomised(digits_cnn())
    x = torch.randn(16, 1, 8, 8)
    calibration = (x, torch.randint(0, 10, (16,)))
    net = PrunableNetwork(model, x[:1], importance=criterion, calibration=calibration)
    for i, g in enumerate(net.groups):
        assert sorted(net.ranking(i).tolist()) == list(range(g.size))


def test_l1_ranks_a_zeroed_channel_last():
    torch.manual_seed(0)
    model = randomised(digits_cnn())
    net = PrunableNetwork(model, torch.randn(1, 1, 8, 8))
    first = net.groups[0].members[0]
    assert first.kind == "out"
    with torch.no_grad():
        model.get_submodule(first.module).weight[3].zero_()
    net = PrunableNetwork(model, torch.randn(1, 1, 8, 8))
    assert int(net.ranking(0)[-1]) == 3


def test_taylor_without_calibration_is_a_clear_error():
    with pytest.raises(InvalidArgumentError, match="calibration"):
        PrunableNetwork(digits_cnn(), torch.randn(1, 1, 8, 8), importance="taylor")


def test_network_pickles_and_keeps_working():
    import pickle

    _, x, _, net = _analyse("resnet20")
    keep = _random_keeps(net, 1)[0]
    clone = pickle.loads(pickle.dumps(net))
    assert clone.macs(keep) == net.macs(keep)
    with torch.no_grad():
        torch.testing.assert_close(clone.export(keep).eval()(x), net.export(keep).eval()(x))
    clone._rankings.clear()
    clone._scores.clear()  # importance needs the dependency graph again: rebuilt lazily
    assert clone.resolve(keep)[0].tolist() == net.resolve(keep)[0].tolist()


# -- bad input ---------------------------------------------------------------------------
class _Raises(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise RuntimeError("boom")


class _Untraceable(nn.Module):
    """Computes under no_grad, so there is no autograd graph to trace dependencies from."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("model, inputs, error, match", [
    ("not a model", torch.randn(1, 3, 8, 8), InvalidArgumentError, "model must be"),
    (nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.randn(1, 12), ModelAnalysisError,
     "no prunable layer"),
    (digits_cnn(), torch.randn(1, 3, 32, 32), ModelAnalysisError, "example_inputs"),
    (digits_cnn(), [1, 2], InvalidArgumentError, "example_inputs"),
    (_Raises(), torch.randn(1, 3, 8, 8), ModelAnalysisError, "forward raised"),
    (_Untraceable(), torch.randn(1, 3, 8, 8), ModelAnalysisError, "traced|prunable"),
])
def test_bad_models_and_inputs(model, inputs, error, match):
    with pytest.raises(error, match=match):
        PrunableNetwork(model, inputs)


def test_unknown_ignored_layer_and_importance():
    with pytest.raises(InvalidArgumentError, match="ignored_layers"):
        PrunableNetwork(digits_cnn(), torch.randn(1, 1, 8, 8), ignored_layers=["nope"])
    with pytest.raises(InvalidArgumentError, match="importance"):
        PrunableNetwork(digits_cnn(), torch.randn(1, 1, 8, 8), importance="l3")


def test_bad_keep_states_name_the_problem():
    net = PrunableNetwork(digits_cnn(), torch.randn(1, 1, 8, 8))
    sizes = [g.size for g in net.groups]
    bad = [
        (sizes[:-1], "entries"),
        ([0, *sizes[1:]], r"\[1, "),
        ([sizes[0] + 1, *sizes[1:]], r"\[1, "),
        ([[0, 0, 1], *sizes[1:]], "distinct"),
        ([[sizes[0]], *sizes[1:]], "distinct channel indices"),
        ([[], *sizes[1:]], "distinct"),
        (["many", *sizes[1:]], "count or a list"),
        (5, "sequence"),
    ]
    for keep, match in bad:
        for method in (net.macs, net.params, net.export, net.apply_masked):
            with pytest.raises(KeepStateError, match=match):
                method(keep)
    assert issubclass(KeepStateError, PruneGymError)
    net.restore()
