"""``constraint="latency"``: a latency model fitted on exported keep states of a real network,
the closed-form terms it reads, and every path that takes it (the environments, the
baselines, ``run_method``, run directories, the command line, ``validate``)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from agents.baselines import global_magnitude, uniform
from agents.methods import make_network, run_method
from prune_gym import LatencyModel, PrunableNetwork, fit_latency_model, load_latency_model
from prune_gym.errors import InvalidArgumentError
from prune_gym.latency_model import _pad

# Much of a small network's latency is what pruning cannot remove (how much depends on the
# machine), so budgets are set between the fitted model's floor and 1, and the envs (whose
# LayerRatio-v0 prunes at most 80 % of a group) at 0.9.
ENV_BUDGET = 0.9


@pytest.fixture(scope="module")
def latency_model(net) -> LatencyModel:
    """The embedded task's model, fitted quickly (few states, short samples)."""
    return fit_latency_model(net, batch_size=64, states=8, rounds=2, min_time=0.002)


@pytest.fixture(scope="module")
def budget(net, latency_model) -> float:
    """Halfway between the latency of one channel per group and the full network's."""
    net = pickle.loads(pickle.dumps(net))
    net.set_latency_model(latency_model)
    return round((1 + net.min_ratio("latency")) / 2, 3)


def random_keeps(net, n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(rng.integers(1, g.size + 1)) for g in net.groups] for _ in range(n)]


def test_kept_dims_are_the_exported_weights(net) -> None:
    """The dims a latency model reads are those of the physically pruned layers."""
    for keep in random_keeps(net, 4):
        model = net.export(keep)
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert [tuple(m.weight.shape[:2]) for m in layers] == net.kept_dims(keep)


def test_padding_rule_by_hand() -> None:
    # up to one vector as it is; wider rounded up to whole vectors, never past the layer
    assert [_pad(n, 8, 64) for n in (1, 5, 8, 9, 16, 17, 60, 64)] == \
        [1, 5, 8, 16, 16, 24, 64, 64]
    assert _pad(13, 8, 14) == 14 and _pad(3, 8, 3) == 3


def test_fit_is_monotone_saved_and_checked(net, latency_model, tmp_path) -> None:
    model = latency_model
    assert len(model.coefficients) == 3 and min(model.coefficients) >= 0
    assert model.base_s > 0 and model.batch_size == 64 and model.threads == 1
    fit = model.fit
    assert fit["states"] == 8 and len(fit["measured"]) == 8 and fit["measured"][0] == 1.0
    assert 0 <= fit["loo_mean_abs_error"] <= fit["loo_max_abs_error"]
    net = pickle.loads(pickle.dumps(net))  # a private copy: the fixture is shared
    net.set_latency_model(model)
    full = net.metric([g.size for g in net.groups], "latency")
    # the full network is predicted from its own features: base_s x sum of the coefficients
    assert full == pytest.approx(model.base_s * 1e9 * sum(model.coefficients), rel=1e-6)
    # adding a channel to any group never lowers the price (a budget needs it)
    for keep in random_keeps(net, 6, seed=1):
        price = net.metric(keep, "latency")
        for i, g in enumerate(net.groups):
            if keep[i] < g.size:
                grown = list(keep)
                grown[i] += 1
                assert net.metric(grown, "latency") >= price
    # saved and loaded: the same prices; a pickled network keeps its model
    path = model.save(tmp_path / "m.json")
    again = load_latency_model(path)
    keep = random_keeps(net, 1, seed=2)[0]
    copy = make_network("digits-cnn-v1")
    copy.set_latency_model(str(path))
    assert copy.metric(keep, "latency") == net.metric(keep, "latency")
    assert again == model
    assert pickle.loads(pickle.dumps(net)).metric(keep, "latency") == net.metric(keep,
                                                                                  "latency")


def test_bad_latency_models_are_named(net, latency_model, tmp_path) -> None:
    fresh = make_network("digits-cnn-v1")
    with pytest.raises(InvalidArgumentError, match="constraint='latency' needs"):
        fresh.metric([g.size for g in fresh.groups], "latency")
    other = make_network("digits-resnet-v1")
    with pytest.raises(InvalidArgumentError, match="fitted on a network with channel groups"):
        other.set_latency_model(latency_model)
    with pytest.raises(InvalidArgumentError, match="is not a file"):
        fresh.set_latency_model(str(tmp_path / "missing.json"))
    garbage = tmp_path / "g.json"
    garbage.write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="not readable JSON"):
        fresh.set_latency_model(garbage)
    garbage.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InvalidArgumentError, match="latency_model must be"):
        fresh.set_latency_model(garbage)
    with pytest.raises(InvalidArgumentError, match="states"):
        fit_latency_model(fresh, states=3)
    with pytest.raises(InvalidArgumentError, match="net must be a PrunableNetwork"):
        fit_latency_model(fresh.original_copy())


@pytest.mark.parametrize("mode", ["cmdp", "project"])
@pytest.mark.parametrize("env_id", ["LayerRatio-v0", "DNNGraph-v0", "ChannelMask-v0"])
def test_envs_price_the_latency_budget(make, latency_model, env_id, mode) -> None:
    env = make(env_id, budget=ENV_BUDGET, constraint="latency", latency_model=latency_model,
               constraint_mode=mode, eval_cache=64)
    base = env.unwrapped
    full = base.net.metric(base.sizes.tolist(), "latency")
    env.action_space.seed(0)
    finals = []
    for episode in range(3):
        _, info = env.reset(seed=episode)
        assert info["latency_ratio"] == pytest.approx(1.0)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.action_space.sample())
            done = term or trunc
        ratio = base.net.metric(base.keep_state(), "latency") / full
        assert info["latency_ratio"] == pytest.approx(ratio)
        assert info["feasible"] == (ratio <= ENV_BUDGET)
        assert info["signed_cost"] == pytest.approx(ratio / ENV_BUDGET - 1)
        finals.append(info)
    if mode == "project":
        assert all(i["feasible"] for i in finals)
    env.close()


def test_env_arguments_are_checked(make, latency_model) -> None:
    with pytest.raises(InvalidArgumentError, match="constraint='latency' needs"):
        make("DNNGraph-v0", constraint="latency")
    with pytest.raises(InvalidArgumentError, match="latency_model is read only with"):
        make("DNNGraph-v0", latency_model=latency_model)
    with pytest.raises(InvalidArgumentError, match="fitted on a network"):
        make("DNNGraph-v0", model="digits-resnet-v1", constraint="latency",
             latency_model=latency_model)


def test_baselines_meet_a_latency_budget(net, latency_model, budget) -> None:
    net = pickle.loads(pickle.dumps(net))
    net.set_latency_model(latency_model)
    limit = budget * net.metric([g.size for g in net.groups], "latency")
    for keep in (uniform(net, budget, "latency"), global_magnitude(net, budget, "latency")):
        assert net.metric(keep, "latency") <= limit
    # a latency budget is another constraint than the MACs one
    assert uniform(net, budget, "latency") != uniform(net, budget, "macs")


def test_run_method_and_its_run_directory(latency_model, budget, tmp_path) -> None:
    from agents.train import RunDirectoryError

    path = latency_model.save(tmp_path / "m.json")
    run = tmp_path / "u"
    result = run_method("uniform", "digits-cnn-v1", budget=budget, constraint="latency",
                        latency_model=str(path), run_dir=run)
    assert result.feasible and result.constraint == "latency"
    assert load_latency_model(run / "latency_model.json") == latency_model
    # resuming with another model is refused: it prices the budget otherwise
    other = LatencyModel(**{**latency_model.__dict__, "base_s": latency_model.base_s * 2})
    with pytest.raises(RunDirectoryError, match="latency_model"):
        run_method("uniform", "digits-cnn-v1", budget=budget, constraint="latency",
                   latency_model=other, run_dir=run, resume=True)
    with pytest.raises(InvalidArgumentError, match="needs latency_model"):
        run_method("uniform", "digits-cnn-v1", budget=budget, constraint="latency")
    with pytest.raises(InvalidArgumentError, match="not for rl-pruner"):
        run_method("rl-pruner", "digits-cnn-v1", budget=budget, constraint="latency",
                   latency_model=latency_model, evaluations=4)
    with pytest.raises(InvalidArgumentError, match="read only with constraint='latency'"):
        run_method("uniform", "digits-cnn-v1", budget=budget, latency_model=latency_model)


def test_rl_agent_trains_on_a_latency_budget(latency_model, budget, tmp_path) -> None:
    result = run_method("ppo-lagrangian-gat", "digits-cnn-v1", budget=budget,
                        constraint="latency", latency_model=latency_model, timesteps=32,
                        run_dir=tmp_path / "g")
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["env_kwargs"]["latency_model"].endswith("latency_model.json")
    net = make_network("digits-cnn-v1")
    net.set_latency_model(latency_model)
    ratio = net.metric(result.keep, "latency") / net.metric([g.size for g in net.groups],
                                                            "latency")
    assert result.feasible == (ratio <= budget)


def test_cli_latency_model_search_and_validate(tmp_path, capsys) -> None:
    from agents.cli import main
    from agents.results import read_results

    model = tmp_path / "lm.json"
    assert main(["latency-model", "--states", "8", "--rounds", "2", "--batch-size", "8",
                 "--out", str(model)]) == 0
    assert "leave-one-out error" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["search", "--agent", "global-magnitude", "--budget", "0.9", "--constraint",
                 "latency", "--latency-model", str(model), "--out", str(out)]) == 0
    (row,) = read_results(out / "results.csv")
    assert row["constraint"] == "latency" and row["feasible"]
    assert main(["validate", str(out / "results.csv")]) == 0
    assert "not replayed" in capsys.readouterr().out
    assert main(["search", "--agent", "uniform", "--constraint", "latency",
                 "--out", str(tmp_path / "x")]) == 2
    assert "needs latency_model" in capsys.readouterr().err
    assert main(["latency-model", "--out", str(tmp_path / "no" / "m.json")]) == 2


@pytest.mark.parametrize("runtime", ["torchscript", "onnx"])
def test_a_model_of_the_deployed_runtime(net, runtime) -> None:
    """Fitted on the saved files as they are loaded back: TorchScript, or ONNX Runtime
    (the onnx extra; run by make test-extras)."""
    if runtime == "onnx":
        for package in ("onnx", "onnxscript", "onnxruntime"):
            pytest.importorskip(package)
    model = fit_latency_model(net, batch_size=16, states=6, rounds=1, min_time=0.002,
                              runtime=runtime)
    assert model.runtime == runtime and load_latency_model(model.to_dict()).runtime == runtime
    assert len(model.fit["measured"]) == 6 and min(model.coefficients) >= 0
    with pytest.raises(InvalidArgumentError, match="runtime"):
        fit_latency_model(net, runtime="tensorrt")


def test_a_model_of_rounded_states_asks_for_rounded_searches(net, make) -> None:
    model = fit_latency_model(net, batch_size=16, states=6, rounds=1, min_time=0.002,
                              round_to=8)
    sizes = [g.size for g in net.groups]
    assert model.round_to == 8
    assert all(k % 8 == 0 or k == s or s < 8 for keep in model.fit["keeps"]
               for k, s in zip(keep, sizes))
    env = make("DNNGraph-v0", budget=ENV_BUDGET, constraint="latency", latency_model=model,
               round_to=8)
    env.close()
    with pytest.raises(InvalidArgumentError, match="search with round_to=8"):
        make("DNNGraph-v0", budget=ENV_BUDGET, constraint="latency", latency_model=model)
    with pytest.raises(InvalidArgumentError, match="search with round_to=8"):
        run_method("uniform", "digits-cnn-v1", budget=ENV_BUDGET, constraint="latency",
                   latency_model=model, round_to=4)
    # the distinct rounded states of a small network are few: each is timed once
    few = fit_latency_model(net, batch_size=4, states=40, rounds=1, min_time=0.0, round_to=16)
    assert few.fit["states"] == len({tuple(k) for k in few.fit["keeps"]}) <= 1 * 2 * 4 + 1
    one_group = PrunableNetwork(nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Flatten(),
                                              nn.Linear(16 * 6 * 6, 10)), torch.randn(1, 1, 8, 8))
    with pytest.raises(InvalidArgumentError, match="round_to=8 leaves fewer than 6"):
        fit_latency_model(one_group, batch_size=4, states=6, rounds=1, min_time=0.0,
                          round_to=8)


def test_committed_models_load() -> None:
    """The ResNet-56 models the latency tables were measured against read back as saved."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    eager = load_latency_model(results / "latency_model_resnet56.json")
    onnx = load_latency_model(results / "latency_model_resnet56_onnx.json")
    assert (eager.runtime, eager.round_to) == ("eager", None)
    assert (onnx.runtime, onnx.round_to) == ("onnx", 8)
    assert len(eager.group_sizes) == len(onnx.group_sizes) == 30
