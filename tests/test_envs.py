"""The three environments on the embedded digits task: API conformance, CMDP semantics,
determinism, pickling, vector environments, export, rendering and evaluation options."""

from __future__ import annotations

import copy
import importlib.util
import math
import pickle
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import prune_gym
from prune_gym import ENV_IDS
from prune_gym.verify import measure
from tests.time_limit import time_limit

ROOT = Path(__file__).resolve().parents[1]


def run_episode(env: gym.Env, policy=None, seed: int | None = None):
    """Steps of one episode as (obs, reward, terminated, truncated, info) tuples."""
    obs, info = env.reset(seed=seed)
    steps = []
    done = False
    while not done:
        action = policy(env) if policy else env.action_space.sample()
        out = env.step(action)
        steps.append(out)
        done = out[2] or out[3]
    return steps


def constant(value: float):
    """A policy giving ``value`` for every Box entry."""
    def policy(env):
        return np.full(env.action_space.shape, value, dtype=np.float32)
    return policy


def assert_obs_equal(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_obs_equal(a[k], b[k])
    else:
        np.testing.assert_array_equal(a, b)


def allowed_checker_warning(message: str, space: gym.spaces.Dict) -> bool:
    """SB3's "unconventional shape" advice for 2-D (graph-shaped) arrays is expected."""
    match = re.match(r"Your observation (\w+) has an unconventional shape", message)
    return bool(match) and len(space[match.group(1)].shape) == 2


def test_registered_and_default_construction() -> None:
    for env_id in ENV_IDS:
        assert env_id in gym.registry
    env = gym.make("DNNGraph-v0")  # the embedded task: no other argument needed
    assert env.unwrapped.task == "digits-cnn-v1" and env.unwrapped.budget == 0.5
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert isinstance(env.unwrapped, prune_gym.DNNGraphEnv)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_checkers_pass_without_unexpected_warnings(make, env_id) -> None:
    env = make(env_id, render_mode="ansi")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env.unwrapped)
    unexpected = [str(w.message) for w in caught
                  if not allowed_checker_warning(str(w.message), env.observation_space)]
    assert not unexpected
    assert any("unconventional shape" in str(w.message) for w in caught)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_graph_obs_mode_passes_gymnasium_checker(make, env_id) -> None:
    env = make(env_id, obs_mode="graph")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped)
    assert not [str(w.message) for w in caught]
    for obs, *_ in run_episode(env, seed=0):
        assert env.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_deterministic_under_reset_seed(make, env_id) -> None:
    def trace(env):
        env.action_space.seed(7)
        obs, _ = env.reset(seed=3)
        out = [obs]
        for obs, reward, term, trunc, info in run_episode(env, seed=3):
            info = {k: v for k, v in info.items() if k != "evaluations"}
            out.append((obs, reward, term, trunc, info))
        return out

    a, b = trace(make(env_id)), trace(make(env_id))
    assert len(a) == len(b)
    assert_obs_equal(a[0], b[0])
    for (oa, *ra), (ob, *rb) in zip(a[1:], b[1:]):
        assert_obs_equal(oa, ob)
        assert ra == rb


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickles_mid_episode_and_continues_identically(make, env_id) -> None:
    env = make(env_id).unwrapped
    env.reset(seed=0)
    env.action_space.seed(1)
    first = env.action_space.sample()
    if env_id == "DNNGraph-v0":
        first = np.full_like(first, -0.9)  # stay infeasible: the episode goes on
    env.step(first)
    clone = pickle.loads(pickle.dumps(env))
    actions = [env.action_space.sample() for _ in range(6)]
    for action in actions:
        a, b = env.step(action), clone.step(action)
        assert_obs_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        assert a[4]["keep"] == b[4]["keep"] and a[4]["cost"] == b[4]["cost"]
        if a[2] or a[3]:
            break


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_cost_is_normalised_violation_paid_at_episode_end(make, net, env_id) -> None:
    env = make(env_id, budget=0.4)
    base = env.unwrapped
    env.action_space.seed(0)
    finals = 0
    for episode in range(12):
        env.reset(seed=episode)
        final = False
        while not final:
            obs, reward, term, trunc, info = env.step(env.action_space.sample())
            final = term or trunc
            assert set(info) >= {"cost", "macs_ratio", "params_ratio", "feasible", "keep",
                                 "evaluations"}
            assert info["cost"] >= 0.0 and isinstance(info["cost"], float)
            macs = net.macs(base.keep_state(), base.importance)
            assert info["macs"] == macs and info["keep"] == base.keep
            assert math.isclose(info["macs_ratio"], macs / net.base_macs)
            assert info["feasible"] == (macs <= 0.4 * net.base_macs)
            if final:
                finals += 1
                assert (info["cost"] == 0.0) == info["feasible"]
                assert math.isclose(info["cost"], max(0.0, macs / (0.4 * net.base_macs) - 1))
                assert 0.0 <= info["accuracy"] <= 1.0 and reward == info["accuracy"]
            else:
                assert info["cost"] == 0.0 and reward == 0.0 and "accuracy" not in info
    assert finals == 12


def test_params_constraint_prices_parameters(make, net) -> None:
    env = make("LayerRatio-v0", constraint="params", budget=0.5)
    *_, (obs, reward, term, trunc, info) = run_episode(env, constant(0.5), seed=0)
    params = net.params(info["keep"])
    assert info["params"] == params
    assert info["feasible"] == (params <= 0.5 * net.base_params)
    assert math.isclose(info["cost"], max(0.0, params / (0.5 * net.base_params) - 1))


def test_layer_ratio_project_mode_is_never_infeasible(make) -> None:
    env = make("LayerRatio-v0", budget=0.3, constraint_mode="project")
    env.action_space.seed(0)
    policies = [constant(-1.0), constant(0.0), None, None, None, None]
    for seed, policy in enumerate(policies):
        steps = run_episode(env, policy, seed=seed)
        assert len(steps) == env.unwrapped.num_groups
        assert steps[-1][4]["feasible"] and steps[-1][4]["cost"] == 0.0
    # in cmdp mode keeping everything is infeasible and costs
    *_, last = run_episode(make("LayerRatio-v0", budget=0.3), constant(-1.0))
    assert not last[4]["feasible"] and last[4]["cost"] > 0


def test_layer_ratio_action_maps_to_ratio(make, net) -> None:
    env = make("LayerRatio-v0", budget=1.0, max_ratio=0.5)
    steps = run_episode(env, constant(1.0))  # prune max_ratio of every group
    sizes = [g.size for g in net.groups]
    assert steps[-1][4]["keep"] == [math.floor(s * 0.5 + 0.5) for s in sizes]
    steps = run_episode(env, constant(-1.0))
    assert steps[-1][4]["keep"] == sizes and steps[-1][4]["macs_ratio"] == 1.0


def test_dnn_graph_terminates_when_feasible_and_truncates_after_max_steps(make) -> None:
    env = make("DNNGraph-v0", budget=0.5, max_steps=3)
    steps = run_episode(env, constant(-1.0))  # prunes nothing: never feasible
    assert len(steps) == 3
    *_, (obs, reward, term, trunc, info) = steps
    assert trunc and not term and info["cost"] > 0 and not info["feasible"]
    assert "accuracy" in info
    steps = run_episode(env, constant(1.0))  # prunes 80 % of everything: feasible at once
    assert len(steps) == 1
    _, reward, term, trunc, info = steps[0]
    assert term and not trunc and info["cost"] == 0.0 and info["feasible"]
    assert reward == info["accuracy"]
    steps = run_episode(env, constant(-0.5))  # 20 % cuts: two steps, then feasible
    assert len(steps) == 2 and all(s[4]["cost"] == 0 and not s[2] for s in steps[:-1])
    assert not steps[0][4]["feasible"]  # one cut is not enough ...
    _, reward, term, trunc, info = steps[-1]  # ... the second one is, and that ends it
    assert term and not trunc and info["feasible"] and info["cost"] == 0.0
    assert info["macs"] <= 0.5 * env.unwrapped.net.base_macs and reward == info["accuracy"]


def test_dnn_graph_project_mode_always_terminates_feasible(make) -> None:
    env = make("DNNGraph-v0", budget=0.2, max_steps=2, constraint_mode="project")
    steps = run_episode(env, constant(-1.0))
    assert len(steps) == 2 and steps[-1][2] and not steps[-1][3]
    assert steps[-1][4]["feasible"] and steps[-1][4]["cost"] == 0.0


def test_channel_mask_never_empties_a_group_and_ignores_padding(make, net) -> None:
    env = make("ChannelMask-v0", budget=1.0)
    base = env.unwrapped
    steps = run_episode(env, lambda e: np.zeros(e.action_space.shape, dtype=np.int8))
    assert steps[-1][4]["keep"] == [1] * len(net.groups)
    kept = base.keep_state()
    assert kept == [[int(net.ranking(i)[0])] for i in range(len(net.groups))]
    # padded bits are ignored: setting them changes nothing
    env.reset()
    for i, g in enumerate(net.groups):
        bits = np.ones(base.max_size, dtype=np.int8)
        bits[0] = 0
        env.step(bits)
        assert base.keep_state()[i] == list(range(1, g.size))


def test_channel_mask_action_masks_pin_padded_bits(make, net) -> None:
    env = make("ChannelMask-v0")
    base = env.unwrapped
    env.reset()
    for g in net.groups:
        masks = base.action_masks()
        assert masks.shape == (2 * base.max_size,) and masks.dtype == bool
        pairs = masks.reshape(-1, 2)
        assert pairs[: g.size].all()  # real bits may be 0 or 1
        assert pairs[g.size:, 0].all() and not pairs[g.size:, 1].any()  # padding: only 0
        obs, *_ = env.step(np.ones(base.max_size, dtype=np.int8))
    assert not obs["channel_mask"].any()


def test_channel_mask_observation_features(make, net) -> None:
    env = make("ChannelMask-v0")
    obs, _ = env.reset()
    feats, valid = obs["channel_features"], obs["channel_mask"]
    size = net.groups[0].size
    assert valid[:size].all() and not valid[size:].any()
    assert feats.shape[1] == 4 and (feats >= 0).all() and (feats <= 1).all()
    assert np.isclose(feats[:size, 0].max(), 1.0)  # L1 norm, scaled to the group's max
    assert not feats[size:].any()
    conv = net.model.get_submodule(net.groups[0].name)
    l1 = conv.weight.detach().abs().sum(dim=(1, 2, 3)).numpy()
    np.testing.assert_allclose(feats[:size, 0], l1 / l1.max(), rtol=1e-5)


def test_channel_mask_project_mode_cuts_to_budget(make) -> None:
    env = make("ChannelMask-v0", budget=0.3, constraint_mode="project")
    steps = run_episode(env, lambda e: np.ones(e.action_space.shape, dtype=np.int8))
    assert steps[-1][4]["feasible"] and steps[-1][4]["cost"] == 0.0


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_export_is_smaller_runs_and_matches_info(make, task, env_id) -> None:
    env = make(env_id, budget=0.5)
    env.action_space.seed(0)
    info = run_episode(env, seed=0)[-1][4]
    pruned = env.unwrapped.export()
    out, macs, params = measure(pruned.eval(), (task.example_inputs,))
    assert out.shape == (1, task.num_classes)
    assert macs == info["macs"] and params == info["params"]
    assert params < sum(p.numel() for p in task.model.parameters())
    x, y = task.val_data
    with torch.no_grad():
        acc = int((pruned(x).argmax(1) == y).sum()) / len(y)
    assert math.isclose(acc, info["accuracy"], abs_tol=1e-9)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_user_model_is_never_modified(task, env_id) -> None:
    """Weights, BatchNorm statistics and the train/eval mode stay as the user left them,
    through analysis, checks, BN recalibration, fine-tuning, episodes and export."""
    model = copy.deepcopy(task.model).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    env = gym.make(env_id, model=model, val_data=task.val_data, budget=0.5,
                   train_data=task.data.train.as_tuple(), bn_recalibration=1,
                   finetune_steps=2, eval_samples=64)
    run_episode(env, seed=0)
    env.unwrapped.export()
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_model_as_factory_and_example_inputs_default(task) -> None:
    env = gym.make("LayerRatio-v0", model=lambda: task.model, val_data=task.val_data)
    net = env.unwrapped.net
    assert net.example_inputs[0].shape == (1, 1, 8, 8)
    torch.testing.assert_close(net.example_inputs[0], task.val_data[0][:1])


def test_val_data_as_dataloader(task, net) -> None:
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*task.val_data),
                                         batch_size=50)
    env = gym.make("DNNGraph-v0", model=net, val_data=loader)
    reference = gym.make("DNNGraph-v0", model=net, val_data=task.val_data)
    a = run_episode(env, constant(0.5))[-1]
    b = run_episode(reference, constant(0.5))[-1]
    assert a[1] == b[1] and a[4]["accuracy"] == b[4]["accuracy"]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_ansi_table(make, net, env_id) -> None:
    env = make(env_id, render_mode="ansi")
    env.reset()
    text = env.render()
    assert isinstance(text, str) and env_id in text
    for g in net.groups:
        assert g.name in text
    assert make(env_id).render() is None


def test_rewards_by_name(make) -> None:
    acc = run_episode(make("DNNGraph-v0"), constant(0.5))[-1]
    amc = run_episode(make("DNNGraph-v0", reward="acc_log_macs"), constant(0.5))[-1]
    assert amc[4]["accuracy"] == acc[4]["accuracy"]
    assert math.isclose(amc[1], -(1 - acc[4]["accuracy"]) * math.log(acc[4]["macs"]))
    env = make("DNNGraph-v0", reward="self_competition")
    first = run_episode(env, constant(0.5))[-1]
    assert first[4]["feasible"] and first[1] == first[4]["accuracy"]  # best starts at 0
    again = run_episode(env, constant(0.5))[-1]
    assert again[1] == 0.0  # the same result no longer beats the record
    worse = run_episode(env, constant(1.0))[-1]
    assert math.isclose(worse[1], worse[4]["accuracy"] - first[4]["accuracy"])
    env.reset(options={"reset_reward": True})
    assert run_episode(env, constant(0.5))[-1][1] == first[1]


def test_evaluation_options(make, net, task) -> None:
    env = make("LayerRatio-v0", eval_samples=50)
    assert len(env.unwrapped.evaluator.x) == 50
    plain = run_episode(make("LayerRatio-v0"), constant(0.6))[-1][4]
    recal = make("LayerRatio-v0", bn_recalibration=2)
    info = run_episode(recal, constant(0.6))[-1][4]
    assert info["keep"] == plain["keep"] and info["accuracy"] != plain["accuracy"]
    tuned = make("LayerRatio-v0", finetune_steps=20, finetune_lr=0.05)
    working = tuned.unwrapped.net
    before = {k: v.clone() for k, v in working.model.state_dict().items()}
    info_ft = run_episode(tuned, constant(0.6))[-1][4]
    assert info_ft["accuracy"] > plain["accuracy"]
    for k, v in working.model.state_dict().items():  # the working copy is untouched
        assert torch.equal(v, before[k])
    again = run_episode(tuned, constant(0.6))[-1][4]  # deterministic, served from cache
    assert again["accuracy"] == info_ft["accuracy"]


def test_evaluation_is_cached_by_keep_state(make) -> None:
    env = make("DNNGraph-v0")
    run_episode(env, constant(0.5))
    n = env.unwrapped.evaluator.evaluations
    info = run_episode(env, constant(0.5))[-1][4]
    assert info["evaluations"] == n == 1


def test_async_vector_env(task) -> None:
    def factory():
        importlib.import_module("prune_gym")  # registers the ids in the worker
        return gym.make("LayerRatio-v0", val_data=task.val_data,
                        train_data=task.data.train.as_tuple())

    # the same episode in this process is what each worker must report
    local = factory()
    actions = np.array([[0.6], [-0.8]], dtype=np.float32)  # worker i always acts actions[i]
    expected = [run_episode(local, constant(float(a[0])))[-1] for a in actions]
    assert expected[0][4]["keep"] != expected[1][4]["keep"]
    # forkserver here; the default fork after torch ran is tests/test_vector_envs.py's
    with time_limit(120):
        envs = gym.vector.AsyncVectorEnv([factory, factory], context="forkserver")
        try:
            obs, infos = envs.reset(seed=0)
            assert envs.single_observation_space.contains({k: v[0] for k, v in obs.items()})
            costs = []
            for _ in range(local.unwrapped.num_groups):
                obs, rewards, term, trunc, infos = envs.step(actions)
                costs.append(infos["cost"])
        finally:
            envs.close()
    assert term.all() and not trunc.any()
    assert all((c == 0).all() for c in costs[:-1])  # the cost is paid at the end only
    for i, (_, reward, _, _, info) in enumerate(expected):
        assert infos["keep"][i] == info["keep"]
        assert costs[-1][i] == info["cost"] and infos["feasible"][i] == info["feasible"]
        assert rewards[i] == reward == infos["accuracy"][i]  # accuracy reward: the score
    assert costs[-1][1] > 0 and costs[-1][0] == 0  # light pruning overspends, heavy does not


def test_env_docs_are_generated_from_docstrings() -> None:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "docs" / "generate_env_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for env_id, text in gen.render_all().items():
        page = ROOT / "docs" / "envs" / f"{env_id}.md"  # env ids and "index"
        assert page.read_text() == text, f"{page} is stale: run docs/generate_env_docs.py"
