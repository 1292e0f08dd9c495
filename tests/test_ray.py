"""Beyond one machine: benchmark cells run as Ray tasks give what they give in-process, and
the environments train under RLlib's PPO (optional extra: ``pip install "prune-gym[ray]"``).

The Ray tests share one local cluster of two CPUs and are skipped where Ray is absent; the
RLlib env factory (plain Gymnasium) and the missing-Ray errors are tested everywhere.
"""

from __future__ import annotations

import functools
import os
import sys
import threading

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.distributed import run_cells_on_ray
from agents.methods import run_method
from prune_gym import ENV_IDS
from prune_gym.arguments import check_int
from prune_gym.errors import InvalidArgumentError
from prune_gym.rllib import MissingRayError, make_rllib_env, register_rllib_envs
from tests.time_limit import time_limit

TASK = "digits-cnn-v1"
FIELDS = ("keep", "val_accuracy", "evaluations", "history", "macs", "params", "feasible")


def random_search_cell(cell: tuple[int, int]) -> dict:
    """One benchmark-like cell (seed, evaluations), with the process and torch threads it
    ran on."""
    seed, evaluations = cell
    result = run_method("random-search", TASK, budget=0.5, evaluations=evaluations, seed=seed)
    return {"pid": os.getpid(), "threads": torch.get_num_threads(),
            **{k: getattr(result, k) for k in FIELDS}}


def checked_cell(cell, extra=None) -> int:
    return check_int(cell, "cell")


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray cluster of 2 CPUs for this module's Ray tests."""
    ray = pytest.importorskip("ray")
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    # pytest imports this file as a top-level module that Ray's workers cannot import:
    # its functions travel by value instead
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with time_limit(180):
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024 ** 2)
    try:
        yield ray
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


# -- the benchmark grid on Ray ---------------------------------------------------------
def test_run_cells_starts_and_stops_its_own_cluster() -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("needs a process where Ray is not running yet (run this test first)")
    with time_limit(240):  # a module-level function: every worker imports it
        got = run_cells_on_ray([3, 1, 2], functools.partial(check_int, argument="cell"),
                               num_cpus=1)
    assert got == [3, 1, 2]
    assert not ray.is_initialized()  # the cluster it started is gone


def test_cells_on_ray_match_in_process(local_ray) -> None:
    # the first cell costs most, so it is not the first to finish
    cells = [(0, 8), (1, 3), (2, 3)]
    expected = [random_search_cell(c) for c in cells]  # also caches the task's weights
    assert len({str(e["keep"]) for e in expected}) > 1  # the seeds differ: order matters
    seen = {}
    with time_limit(420):
        got = run_cells_on_ray(cells, random_search_cell,
                               on_result=lambda i, r: seen.setdefault(i, r))
    for g, e in zip(got, expected):
        assert {k: g[k] for k in FIELDS} == {k: e[k] for k in FIELDS}
        assert g["pid"] != os.getpid() and g["threads"] == 1  # a Ray worker, one thread
    assert seen == dict(enumerate(got))  # each result handed over once, under its index


def test_failing_cell_raises_its_own_error(local_ray) -> None:
    with time_limit(180), pytest.raises(InvalidArgumentError, match="cell must be an integer"):
        run_cells_on_ray([1, -1, 2], checked_cell)
    with time_limit(180):
        assert run_cells_on_ray((4, 5), checked_cell, threads=2) == [4, 5]
    assert run_cells_on_ray([], checked_cell) == []


def test_run_cells_arguments(local_ray) -> None:
    with pytest.raises(InvalidArgumentError, match="num_cpus only applies when this call"):
        run_cells_on_ray([1], checked_cell, num_cpus=2)  # Ray is running already
    with pytest.raises(InvalidArgumentError, match="give one of them"):
        run_cells_on_ray([1], checked_cell, num_cpus=2, address="auto")
    with pytest.raises(InvalidArgumentError, match="cells must be a list"):
        run_cells_on_ray("123", checked_cell)
    with pytest.raises(InvalidArgumentError, match="fn must be a callable"):
        run_cells_on_ray([1], None)
    with pytest.raises(InvalidArgumentError, match="threads must be an integer >= 1"):
        run_cells_on_ray([1], checked_cell, threads=0)
    with pytest.raises(InvalidArgumentError, match=r"threads=3 CPUs per cell is more than "
                                                   r"the Ray cluster has \(2\)"):
        run_cells_on_ray([1], checked_cell, threads=3)
    with pytest.raises(InvalidArgumentError, match="on_result must be a callable"):
        run_cells_on_ray([1], checked_cell, on_result=3)
    with pytest.raises(InvalidArgumentError, match="fn cannot be sent to a Ray worker"):
        run_cells_on_ray([1], functools.partial(checked_cell, extra=threading.Lock()))
    with pytest.raises(InvalidArgumentError, match=r"cells\[1\] cannot be sent"):
        run_cells_on_ray([1, threading.Lock()], checked_cell)


# -- RLlib -----------------------------------------------------------------------------
def test_one_rllib_ppo_iteration_on_dnngraph(local_ray) -> None:
    pytest.importorskip("ray.rllib")
    from ray.rllib.algorithms.ppo import PPOConfig

    assert register_rllib_envs() == ENV_IDS
    env_config = {"model": TASK, "eval_samples": 100}
    config = (PPOConfig()
              .environment("DNNGraph-v0", env_config=env_config)
              .env_runners(num_env_runners=0)
              .training(train_batch_size_per_learner=20, minibatch_size=10, num_epochs=2)
              .debugging(seed=0))
    with time_limit(420):
        algo = config.build_algo()
        try:
            flat = make_rllib_env("DNNGraph-v0", env_config)
            assert algo.env_runner.env.single_observation_space == flat.observation_space
            assert algo.env_runner.env.single_action_space == flat.action_space
            flat.close()
            before = {k: v.detach().clone() for k, v in algo.get_module().state_dict().items()}
            result = algo.train()
            after = algo.get_module().state_dict()
        finally:
            algo.stop()
    runners, learner = result["env_runners"], result["learners"]["default_policy"]
    assert runners["num_env_steps_sampled"] == 20 and runners["num_episodes"] >= 1
    # the default reward is the pruned network's accuracy, paid once per episode
    assert 0.0 <= runners["episode_return_min"] <= runners["episode_return_max"] <= 1.0
    assert 1 <= runners["episode_len_max"] <= 5  # DNNGraph's max_steps
    assert np.isfinite(learner["total_loss"])
    assert any(not torch.equal(before[k], after[k]) for k in before)  # PPO updated the policy


# -- the env factory (no Ray needed) ---------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_rllib_env_is_the_env_flattened(env_id) -> None:
    """Same episode through the RLlib form and the plain env: same observations (flattened),
    rewards and end."""
    config = {"model": TASK, "eval_samples": 100}
    given = dict(config)
    env = make_rllib_env(env_id, config)
    raw = gym.make(env_id, **config)
    assert config == given  # nothing the user passed is modified
    assert isinstance(env.observation_space, spaces.Box)
    assert env.observation_space.shape == (spaces.flatdim(raw.observation_space),)
    assert env.observation_space.dtype == np.float32
    assert isinstance(env.action_space, spaces.MultiDiscrete if env_id == "ChannelMask-v0"
                      else spaces.Box)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=3)
    raw_obs, _ = raw.reset(seed=3)
    done, steps = False, 0
    while not done:
        assert env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs, spaces.flatten(raw.observation_space, raw_obs))
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        raw_obs, raw_reward, *ends, raw_info = raw.step(
            action.astype(np.int8) if env_id == "ChannelMask-v0" else action)
        assert (reward, terminated, truncated) == (raw_reward, *ends)
        done, steps = terminated or truncated, steps + 1
    assert info["keep"] == raw_info["keep"] and steps >= 1
    env.close()
    raw.close()


def test_rllib_env_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="env_id='CartPole-v1' is not supported"):
        make_rllib_env("CartPole-v1")
    with pytest.raises(InvalidArgumentError, match="env_config must be a dict"):
        make_rllib_env("DNNGraph-v0", [("model", TASK)])
    with pytest.raises(InvalidArgumentError, match="flatten must be True or False"):
        make_rllib_env("DNNGraph-v0", flatten="yes")
    with pytest.raises(InvalidArgumentError, match="obs_mode='graph' gives observations"):
        make_rllib_env("DNNGraph-v0", {"model": TASK, "obs_mode": "graph"})
    env = make_rllib_env("DNNGraph-v0", {"model": TASK, "obs_mode": "graph"}, flatten=False)
    assert isinstance(env.observation_space, spaces.Graph)  # for a custom RLModule
    env.close()


def test_missing_ray_names_the_extra(monkeypatch) -> None:
    for name in ("ray", "ray.cloudpickle", "ray.tune", "ray.tune.registry"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    for call in (lambda: run_cells_on_ray([1], checked_cell), register_rllib_envs):
        with pytest.raises(MissingRayError, match='pip install "prune-gym\\[ray\\]"') as info:
            call()
        assert isinstance(info.value, InvalidArgumentError)
        assert isinstance(info.value, ImportError)
