"""Stable-Baselines3 and sb3-contrib algorithms train on the environments they support, with
the default MultiInputPolicy, in plain, dummy-vectorised and subprocess-vectorised form."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import prune_gym  # noqa: F401 - registers the environments
from agents.recurrent import RecurrentPPO
from prune_gym import ENV_IDS
from tests.time_limit import time_limit

BOX_ENVS = ("LayerRatio-v0", "DNNGraph-v0")


def small() -> dict:
    """Small networks keep the tests fast (a fresh dict: SB3 adds keys to the one it gets)."""
    return {"net_arch": [32, 32]}

STEPS = 256


@pytest.fixture(scope="module")
def make(task, net):
    def _make(env_id: str, **kwargs):
        return Monitor(gym.make(env_id, model=net, val_data=task.val_data, eval_samples=100,
                                **kwargs))
    return _make


def acting_parameters(model) -> list[torch.Tensor]:
    """Copies of the parameters ``predict`` acts with (the actor, where there is a critic
    beside it), to see whether training changed them."""
    acting = getattr(model.policy, "actor", None) or model.policy
    return [p.detach().clone() for p in acting.parameters()]


def learn(model, env: Monitor, steps: int = STEPS) -> None:
    """Train, then check that learning happened: the acting parameters moved, whole
    episodes ended with the accuracy reward, and the policy acts inside the action space."""
    before = acting_parameters(model)
    model.learn(steps)
    after = acting_parameters(model)
    assert model.num_timesteps >= steps
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "no gradient step"
    base = env.unwrapped
    lengths, rewards = env.get_episode_lengths(), env.get_episode_rewards()
    assert len(rewards) >= 3
    for length, reward in zip(lengths, rewards):
        if base.env_id == "DNNGraph-v0":
            assert 1 <= length <= base.max_steps
        else:
            assert length == base.num_groups  # one decision per group, then the end
        assert 0.0 <= reward <= 1.0  # the accuracy of the final state, paid once
    obs, _ = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action).astype(env.action_space.dtype))


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("algo", [PPO, A2C])
def test_on_policy(make, env_id, algo) -> None:
    env = make(env_id)
    kwargs = {"n_steps": 32, "batch_size": 32, "n_epochs": 2} if algo is PPO else \
        {"n_steps": 8}
    model = algo("MultiInputPolicy", env, policy_kwargs=small(), seed=0, device="cpu", **kwargs)
    learn(model, env)


@pytest.mark.parametrize("env_id", BOX_ENVS)
@pytest.mark.parametrize("algo", [SAC, TD3, DDPG])
def test_off_policy(make, env_id, algo) -> None:
    env = make(env_id)
    model = algo("MultiInputPolicy", env, policy_kwargs=small(), seed=0, device="cpu",
                 buffer_size=1_000, learning_starts=64, batch_size=32, train_freq=4)
    learn(model, env)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_recurrent_ppo(make, env_id) -> None:
    """agents.recurrent.RecurrentPPO: sb3-contrib's, able to train on MultiBinary actions."""
    env = make(env_id)
    model = RecurrentPPO("MultiInputLstmPolicy", env, n_steps=32, batch_size=32, n_epochs=1,
                         policy_kwargs={**small(), "lstm_hidden_size": 16}, seed=0, device="cpu")
    learn(model, env)


def test_maskable_ppo(make) -> None:
    env = make("ChannelMask-v0")
    model = MaskablePPO("MultiInputPolicy", env, n_steps=32, batch_size=32, n_epochs=2,
                        policy_kwargs=small(), seed=0, device="cpu")
    learn(model, env)
    base = env.unwrapped
    obs, _ = env.reset()
    for size in (g.size for g in base.net.groups):
        action, _ = model.predict(obs, action_masks=base.action_masks())
        assert not action[size:].any()  # masked padded bits are never set
        obs, *_ = env.step(action)


def _factory(env_id: str):
    """A picklable env constructor for subprocesses (the default task, small eval subset)."""
    def make_env():
        importlib.import_module("prune_gym")  # registers the ids in the worker
        return Monitor(gym.make(env_id, eval_samples=100))
    return make_env


def test_dummy_vec_env_batches_dict_observations(task, net) -> None:
    def one():
        return gym.make("DNNGraph-v0", model=net, val_data=task.val_data)

    venv = DummyVecEnv([one, one])
    obs = venv.reset()
    for key, space in venv.observation_space.spaces.items():
        assert obs[key].shape == (2, *space.shape)
    obs, rewards, dones, infos = venv.step(np.ones((2, len(net.groups)), dtype=np.float32))
    assert dones.all() and all(i["feasible"] and i["cost"] == 0.0 for i in infos)
    assert all("terminal_observation" in i for i in infos)
    venv.close()


def test_subproc_vec_env_with_maskable_ppo() -> None:
    with time_limit(240):
        venv = SubprocVecEnv([_factory("ChannelMask-v0")] * 2)
        try:
            masks = np.stack(venv.env_method("action_masks"))
            assert masks.shape == (2, 2 * venv.action_space.n)
            model = MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=32,
                                n_epochs=1, policy_kwargs=small(), seed=0, device="cpu")
            before = acting_parameters(model)
            model.learn(64)
        finally:
            venv.close()
    assert model.num_timesteps >= 64 and len(model.ep_info_buffer) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, acting_parameters(model)))


def test_subproc_vec_env_with_ppo() -> None:
    with time_limit(240):
        venv = SubprocVecEnv([_factory("LayerRatio-v0")] * 2)
        try:
            model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1,
                        policy_kwargs=small(), seed=0, device="cpu")
            before = acting_parameters(model)
            model.learn(64)
            budgets = venv.get_attr("budget")
        finally:
            venv.close()
    assert model.num_timesteps >= 64 and len(model.ep_info_buffer) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, acting_parameters(model)))
    assert budgets == [0.5, 0.5]
