"""Channel splits, chunks, slices and partial residuals: the analysis ends, the groups that
pass through them are excluded naming the op, every other group prunes exactly."""

from __future__ import annotations

import copy
import re
import signal
import time
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_gym import PrunableNetwork, tracing
from prune_gym.errors import AnalysisTimeoutError, InvalidArgumentError, ModelAnalysisError
from prune_gym.importance import IMPORTANCE_CRITERIA
from prune_gym.network import PruningWarning
from prune_gym.verify import measure
from tests import split_models
from tests.time_limit import time_limit
from tests.toy_models import randomised

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _analyse(factory, **kwargs) -> tuple[torch.nn.Module, dict, PrunableNetwork]:
    torch.manual_seed(0)
    model = randomised(factory())
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        net = PrunableNetwork(model, X, **kwargs)
    return model, before, net


def _check_export(net: PrunableNetwork, keep, model, before) -> torch.nn.Module:
    """Export runs, keeps the output shape, its real parameter count and FlopCounterMode's
    MACs are what the cost model says, it computes what the masked copy computes, and the
    user's model is untouched."""
    pruned = net.export(keep).eval()
    out, macs, params = measure(pruned, (X,))
    assert tuple(out.shape) == net.output_shape
    assert params == sum(p.numel() for p in pruned.parameters()) == net.params(keep)
    assert macs == net.macs(keep)
    with net.masked(keep) as masked, torch.no_grad():
        torch.testing.assert_close(masked(X), out, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    return pruned


def test_partial_residuals_end_and_exclude_the_sliced_groups():
    # RexNet's block adds its input onto the first channels of its output. Without the cut
    # at the channel slices, Torch-Pruning's group search on 9 of them does not end.
    with time_limit(180):  # a loaded 2-core machine takes ~10 s; without the cut: no end
        model, before, net = _analyse(split_models.PartialResidualStack)
    sliced = [g for g in net.excluded_groups if "channel slice (SliceBackward0: x[:, " in g.reason]
    assert sliced and len(sliced) == len(net.excluded_groups)
    assert "x[:, 24:]" in " ".join(g.reason for g in sliced)  # the slice as written
    # the expansions inside each block and the head are free; the streams are not
    assert {g.name for g in net.groups} == {f"blocks.{i}.body.0.0" for i in range(9)} | {
        "head.0"}
    assert net.min_ratio() < 0.05
    _check_export(net, [max(1, g.size // 2) for g in net.groups], model, before)


def test_the_group_search_that_stalls_raises_naming_the_stage_and_the_layer(monkeypatch):
    # the same net with the cut switched off: a bounded analysis, a clear error
    monkeypatch.setattr(tracing, "cut_channel_splits", lambda dg: {})
    with time_limit(60), pytest.raises(AnalysisTimeoutError) as err:
        _analyse(split_models.PartialResidualStack, analysis_timeout=2)
    message = str(err.value)
    assert "analysis_timeout=2 s" in message and "get_all_groups" in message
    assert re.search(r"grouping the channels of 'blocks\.\d\.", message)
    assert isinstance(err.value, ModelAnalysisError)


def test_the_analysis_deadline_leaves_an_outer_alarm_armed():
    with time_limit(60):
        _analyse(split_models.CSPNet)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 60
    with time_limit(200):  # a longer outer alarm: the analysis' own is used, then re-armed
        start = time.perf_counter()
        _analyse(split_models.CSPNet, analysis_timeout=100)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        # re-armed for what it had left (not cancelled, not reset to 200)
        assert 0 < remaining <= 200 - (time.perf_counter() - start) + 1
        assert remaining >= 200 - (time.perf_counter() - start) - 5


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), "60", True])
def test_a_bad_analysis_timeout_is_refused_naming_it(timeout):
    with pytest.raises(InvalidArgumentError, match="analysis_timeout"):
        PrunableNetwork(split_models.CSPNet(), X, analysis_timeout=timeout)


@pytest.mark.parametrize("factory, split_groups, free", [
    (split_models.CSPNet, {"pre1.0", "block1.1.0", "pre2.0"},
     {"stem.0", "block1.0.0", "post1.0", "block2.0.0", "block2.1.0", "post2.0"}),
    (split_models.Res2Net, {"blocks.0.reduce.0", "blocks.0.convs.0.0", "blocks.1.reduce.0",
                            "blocks.1.convs.0.0"}, {"stem.0"}),
    (split_models.MixNet, {"expand.0", "mix.convs.0", "mix.convs.1", "mix.convs.2"},
     {"stem.0", "head.0"}),
])
def test_groups_through_a_split_are_excluded_and_the_rest_ranks_and_exports(
        factory, split_groups, free):
    # these raised IndexError from Torch-Pruning's importance at the first masks()/export()
    model, before, net = _analyse(factory, importance="l2")
    assert {g.name for g in net.excluded_groups} == split_groups
    assert all("channel split (Split" in g.reason and "torch.split / chunk" in g.reason
               for g in net.excluded_groups)
    assert {g.name for g in net.groups} == free
    x, y = X, torch.tensor([1, 3])
    for criterion in IMPORTANCE_CRITERIA:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PruningWarning)
            crit = PrunableNetwork(model, X, importance=criterion, calibration=(x, y))
        masks = crit.masks([max(1, g.size // 2) for g in crit.groups])
        assert [int(m.sum()) for m in masks] == [max(1, g.size // 2) for g in crit.groups]
    rng = np.random.default_rng(0)
    for keep in ([max(1, g.size // 2) for g in net.groups], [1 for _ in net.groups],
                 [int(rng.integers(1, g.size + 1)) for g in net.groups]):
        _check_export(net, keep, model, before)


def test_a_group_whose_channels_cannot_be_ranked_is_excluded_by_verification(monkeypatch):
    from prune_gym import importance

    real = importance.channel_scores

    tried = []

    def flaky(model, groups, criterion, **kwargs):  # the first group tried cannot be scored
        scores = real(model, groups, criterion, **kwargs)
        tried.append([i for i, s in enumerate(kwargs["skip"]) if not s])
        kwargs["failures"][tried[-1][0]] = "IndexError: index 32 is out of bounds"
        return scores

    monkeypatch.setattr("prune_gym.network.channel_scores", flaky)
    _, _, net = _analyse(split_models.CSPNet)
    # verification tries the prunable groups that pass through an index-mapping op (here
    # the branch concatenated into post2), not the plain ones
    assert [net.all_groups[i].name for i in tried[0]] == ["block2.1.0"]
    unranked = [g for g in net.excluded_groups if "cannot be ranked" in g.reason]
    assert len(unranked) == 1 and unranked[0].index == tried[0][0]
    assert "importance 'l1' (IndexError" in unranked[0].reason
    masks = net.masks([1 for _ in net.groups])
    assert [int(m.sum()) for m in masks] == [1] * len(net.groups)


def test_describe_reports_the_macs_the_prunable_groups_control():
    # MixNet's mixed-kernel block is fixed by its split: every remaining group pruned to one
    # channel still leaves most of the MACs, and describe() says so in MACs, not in groups
    model, before, net = _analyse(split_models.MixNet)
    floor_model = _check_export(net, [1 for _ in net.groups], model, before)
    _, measured, _ = measure(floor_model, (X,))
    floor = measured / net.base_macs
    assert floor == pytest.approx(net.min_ratio())
    text = net.describe()
    assert f"prunable groups control {1 - floor:.1%} of the MACs" in text
    assert f"leaves {floor:.1%}" in text and floor > 0.25


def test_csp_darknet_pruned_by_an_env_to_half_its_macs():
    """A YOLO-style backbone end to end: LayerRatio-v0 prunes it to 50 % of its MACs (the
    action wall keeps every step feasible), the export is exactly what the env reports."""
    torch.manual_seed(0)
    model = randomised(split_models.CSPDarknet())
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        env = gym.make("LayerRatio-v0", model=model, val_data=(x, y), example_inputs=x[:1],
                       budget=0.5, constraint_mode="project")
    net = env.unwrapped.net
    assert net.min_ratio() < 0.05 and len(net.groups) == 12
    env.action_space.seed(0)
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    assert info["feasible"] and info["macs_ratio"] <= 0.5
    pruned = env.unwrapped.export().eval()
    out, macs, params = measure(pruned, (x[:1],))
    assert out.shape == (1, 10)
    assert macs == info["macs"] <= 0.5 * net.base_macs
    assert params == info["params"] == sum(p.numel() for p in pruned.parameters())
    assert params < sum(p.numel() for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_cli_describe_reports_the_macs_the_prunable_groups_control(capsys):
    from agents.cli import main
    from agents.methods import make_network
    from prune_gym.tasks import make_task

    assert main(["describe", "--task", "digits-cnn-v1"]) == 0
    out = capsys.readouterr().out
    net = make_network(make_task("digits-cnn-v1"), importance="l1")
    floor = net.min_ratio()
    assert f"prunable groups control {1 - floor:.1%} of the MACs" in out
    assert f"keeping one channel in every group leaves {floor:.1%}" in out
