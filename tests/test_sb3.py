"""Stable-Baselines3 and sb3-contrib algorithms train on the environments they support, with
the default MultiInputPolicy, in plain, dummy-vectorised and subprocess-vectorised form."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import prune_gym  # noqa: F401 - registers the environments
from agents.recurrent import RecurrentPPO
from prune_gym import ENV_IDS

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


def assert_trained(model, env: Monitor) -> None:
    """The algorithm ran its steps over whole episodes and acts inside the action space."""
    assert model.num_timesteps >= STEPS
    assert len(env.get_episode_rewards()) >= 3
    assert all(np.isfinite(env.get_episode_rewards()))
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
    model.learn(STEPS)
    assert_trained(model, env)


@pytest.mark.parametrize("env_id", BOX_ENVS)
@pytest.mark.parametrize("algo", [SAC, TD3, DDPG])
def test_off_policy(make, env_id, algo) -> None:
    env = make(env_id)
    model = algo("MultiInputPolicy", env, policy_kwargs=small(), seed=0, device="cpu",
                 buffer_size=1_000, learning_starts=64, batch_size=32, train_freq=4)
    model.learn(STEPS)
    assert_trained(model, env)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_recurrent_ppo(make, env_id) -> None:
    """agents.recurrent.RecurrentPPO: sb3-contrib's, able to train on MultiBinary actions."""
    env = make(env_id)
    model = RecurrentPPO("MultiInputLstmPolicy", env, n_steps=32, batch_size=32, n_epochs=1,
                         policy_kwargs={**small(), "lstm_hidden_size": 16}, seed=0, device="cpu")
    model.learn(STEPS)
    assert_trained(model, env)


def test_maskable_ppo(make) -> None:
    env = make("ChannelMask-v0")
    model = MaskablePPO("MultiInputPolicy", env, n_steps=32, batch_size=32, n_epochs=2,
                        policy_kwargs=small(), seed=0, device="cpu")
    model.learn(STEPS)
    assert_trained(model, env)
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
    venv = SubprocVecEnv([_factory("ChannelMask-v0")] * 2)
    try:
        masks = np.stack(venv.env_method("action_masks"))
        assert masks.shape == (2, 2 * venv.action_space.n)
        model = MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1,
                            policy_kwargs=small(), seed=0, device="cpu")
        model.learn(64)
        assert model.num_timesteps >= 64
    finally:
        venv.close()


def test_subproc_vec_env_with_ppo() -> None:
    venv = SubprocVecEnv([_factory("LayerRatio-v0")] * 2)
    try:
        model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=32, n_epochs=1,
                    policy_kwargs=small(), seed=0, device="cpu")
        model.learn(64)
        assert model.num_timesteps >= 64 and len(model.ep_info_buffer) > 0
        assert venv.get_attr("budget") == [0.5, 0.5]
    finally:
        venv.close()
