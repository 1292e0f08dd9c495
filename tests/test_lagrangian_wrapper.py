"""LagrangianRewardWrapper: the penalty and the multiplier's updates worked out by hand,
saving like VecNormalize, SAC and TD3 on a two-worker SubprocVecEnv sharing one lambda
(under a time limit), and bad input."""

from __future__ import annotations

import importlib

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from agents.common.vec_env import LagrangianRewardWrapper
from prune_gym.errors import CheckpointError, InvalidArgumentError, PruneGymError
from tests.time_limit import time_limit


class TwoSteps(gym.Env):
    """Two steps per episode; reward ``1 + a``, cost ``max(0, a)`` on each step."""

    def __init__(self, cost_key: str = "cost"):
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.cost_key = cost_key

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.asarray(action).reshape(-1)[0])
        self.t += 1
        return (np.full(1, self.t / 2, np.float32), 1.0 + a, self.t == 2, False,
                {self.cost_key: max(0.0, a), "step": self.t})


def sgd(lambda_init: float, lr: float = 0.1) -> dict:
    return {"optimizer": "sgd", "lr": lr, "lambda_init": lambda_init}


def test_penalty_and_update_by_hand() -> None:
    venv = LagrangianRewardWrapper(DummyVecEnv([TwoSteps, TwoSteps]), cost_limit=0.5,
                                   lagrangian_kwargs=sgd(0.5), update_interval=2)
    venv.reset()
    _, rewards, dones, infos = venv.step(np.array([[0.8], [-0.4]], np.float32))
    # r = [1.8, 0.6], c = [0.8, 0]: paid r - 0.5 c; no episode ended, so no update yet
    np.testing.assert_allclose(rewards, [1.8 - 0.4, 0.6], rtol=1e-6)
    assert not dones.any() and venv.lagrange.updates == 0
    assert [i["original_reward"] for i in infos] == pytest.approx([1.8, 0.6])
    assert [i["lagrange_multiplier"] for i in infos] == [0.5, 0.5]
    np.testing.assert_allclose(venv.get_original_reward(), [1.8, 0.6], rtol=1e-6)
    _, rewards, dones, infos = venv.step(np.array([[0.2], [0.6]], np.float32))
    np.testing.assert_allclose(rewards, [1.2 - 0.1, 1.6 - 0.3], rtol=1e-6)
    assert dones.all()
    assert [i["episode_cost"] for i in infos] == pytest.approx([1.0, 0.6])
    # one update from the mean episode cost 0.8: 0.5 + 0.1 * (0.8 - 0.5)
    assert venv.lagrange.updates == 1 and venv.lagrange_multiplier == pytest.approx(0.53)
    _, rewards, _, _ = venv.step(np.array([[1.0], [0.0]], np.float32))  # the new lambda
    np.testing.assert_allclose(rewards, [2.0 - 0.53, 1.0], rtol=1e-6)


def test_interval_counts_steps_of_all_workers_and_waits_for_an_episode() -> None:
    venv = LagrangianRewardWrapper(DummyVecEnv([TwoSteps] * 2), cost_limit=0.0,
                                   lagrangian_kwargs=sgd(0.0, lr=1.0), update_interval=6)
    venv.reset()
    act = np.full((2, 1), 0.5, np.float32)
    venv.step(act)
    venv.step(act)  # 4 steps, 2 episodes: under the interval
    assert venv.lagrange.updates == 0
    venv.step(act)  # 6 steps: update from the two episodes of cost 1.0
    assert venv.lagrange.updates == 1 and venv.lagrange_multiplier == pytest.approx(1.0)
    venv.step(act)  # episodes end at step 8 and 12 ...
    venv.step(act)
    venv.step(act)
    assert venv.lagrange.updates == 2  # ... the one at 12 triggers the next update


def test_falls_with_a_signed_cost() -> None:
    def env():
        return TwoSteps(cost_key="signed")

    class Signed(gym.Wrapper):  # the cost is a margin: negative when under the limit
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            info["signed"] = float(np.asarray(action).reshape(-1)[0]) - 0.5
            return obs, r, term, trunc, info

    venv = LagrangianRewardWrapper(DummyVecEnv([lambda: Signed(env())]), cost_key="signed",
                                   lagrangian_kwargs=sgd(1.0), update_interval=2)
    venv.reset()
    for _ in range(4):
        venv.step(np.array([[-0.5]], np.float32))  # -1 per step, -2 per episode
    assert venv.lagrange_multiplier == pytest.approx(1.0 - 2 * 0.1 * 2.0)


def test_a_single_env_is_vectorised_with_a_monitor() -> None:
    venv = LagrangianRewardWrapper(TwoSteps())
    assert isinstance(venv.venv, DummyVecEnv) and venv.num_envs == 1
    assert venv.env_is_wrapped(Monitor) == [True]
    monitored = Monitor(TwoSteps())
    again = LagrangianRewardWrapper(monitored)
    assert again.venv.envs[0] is monitored  # not wrapped twice


def test_save_and_load_continue_identically(tmp_path) -> None:
    a = LagrangianRewardWrapper(DummyVecEnv([TwoSteps] * 2), lagrangian="pid",
                                lagrangian_kwargs={"ki": 0.5, "delay": 3}, update_interval=4)
    a.reset()
    rng = np.random.default_rng(0)
    for _ in range(7):
        a.step(rng.uniform(-1, 1, (2, 1)).astype(np.float32))
    a.save(tmp_path / "lagrangian.json")
    b = LagrangianRewardWrapper.load(tmp_path / "lagrangian.json", DummyVecEnv([TwoSteps] * 2))
    assert b.lagrange.state_dict() == a.lagrange.state_dict()
    assert (b.cost_key, b.update_interval, b.lagrange.rule) == ("cost", 4, "pid")
    b.reset()
    a.reset()
    for _ in range(9):
        act = rng.uniform(-1, 1, (2, 1)).astype(np.float32)
        np.testing.assert_array_equal(a.step(act)[1], b.step(act)[1])
    assert a.lagrange.updates == b.lagrange.updates > 2


def test_load_rejects_what_it_did_not_write(tmp_path) -> None:
    venv = DummyVecEnv([TwoSteps])
    with pytest.raises(CheckpointError):
        LagrangianRewardWrapper.load(tmp_path / "absent.json", venv)
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        LagrangianRewardWrapper.load(tmp_path / "garbage.json", venv)
    (tmp_path / "other.json").write_text('{"obs_rms": 1}')
    with pytest.raises(CheckpointError, match="not a file written"):
        LagrangianRewardWrapper.load(tmp_path / "other.json", venv)


@pytest.mark.parametrize("kwargs, name", [
    ({"venv": "LayerRatio-v0"}, "venv"),
    ({"update_interval": 0}, "update_interval"),
    ({"update_interval": 2.5}, "update_interval"),
    ({"cost_key": ""}, "cost_key"),
    ({"cost_limit": -0.5}, "cost_limit"),
    ({"lagrangian": "newton"}, "rule"),
    ({"lagrangian": "pid", "lagrangian_kwargs": {"kd": -1.0}}, "kd"),
    ({"lagrangian_kwargs": "lr=0.1"}, "lagrangian_kwargs"),
])
def test_bad_arguments(kwargs, name) -> None:
    kwargs.setdefault("venv", DummyVecEnv([TwoSteps]))
    with pytest.raises(InvalidArgumentError, match=name):
        LagrangianRewardWrapper(**kwargs)


def test_env_without_the_cost_key_is_named() -> None:
    venv = LagrangianRewardWrapper(DummyVecEnv([TwoSteps]), cost_key="signed_cost")
    venv.reset()
    with pytest.raises(PruneGymError, match=r"'signed_cost'.*'cost', 'step'\]"):
        venv.step(np.zeros((1, 1), np.float32))


# -- any SB3 algorithm, two subprocess workers, one lambda -------------------------------------
def _factory(env_id: str):
    """A picklable constructor for the workers: the default task, a small eval subset."""
    def make_env():
        importlib.import_module("prune_gym")  # registers the ids in the worker
        return Monitor(gym.make(env_id, eval_samples=100))
    return make_env


class RecordLambdas(BaseCallback):
    """Each step's ``lagrange_multiplier`` as every worker received it."""

    def __init__(self):
        super().__init__()
        self.lambdas: list[list[float]] = []
        self.episode_ends = [0, 0]
        self.largest_penalty_error = 0.0

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        self.lambdas.append([info["lagrange_multiplier"] for info in infos])
        expected = [i["original_reward"] - i["lagrange_multiplier"] * i["signed_cost"]
                    for i in infos]  # what the algorithm must have been paid
        self.largest_penalty_error = max(self.largest_penalty_error, float(
            np.abs(np.asarray(self.locals["rewards"]) - expected).max()))
        for i, info in enumerate(infos):
            self.episode_ends[i] += "episode_cost" in info
        return True


@pytest.fixture(scope="module")
def subproc_venv():
    """Two LayerRatio-v0 workers (shared by the SAC and TD3 tests to start them once)."""
    with time_limit(120):
        venv = SubprocVecEnv([_factory("LayerRatio-v0")] * 2)
    yield venv
    try:
        with time_limit(30):
            venv.close()
    except TimeoutError:
        for process in venv.processes:
            process.kill()
        raise


@pytest.mark.parametrize("algo", [SAC, TD3])
def test_off_policy_trains_on_subproc_workers_with_one_lambda(subproc_venv, algo) -> None:
    venv = LagrangianRewardWrapper(subproc_venv, cost_key="signed_cost", lagrangian="gradient",
                                   lagrangian_kwargs={"lambda_init": 0.5}, update_interval=12)
    record = RecordLambdas()
    with time_limit(180):
        model = algo("MultiInputPolicy", venv, policy_kwargs={"net_arch": [32, 32]}, seed=0,
                     device="cpu", buffer_size=1_000, learning_starts=32, batch_size=32,
                     train_freq=4)
        model.learn(192, callback=record)
    assert model.num_timesteps >= 192
    assert all(a == b for a, b in record.lambdas)  # every step, both workers paid one lambda
    assert len({a for a, _ in record.lambdas}) >= 3  # which moved during training
    assert min(record.episode_ends) >= 10  # from the episodes of both workers
    assert venv.lagrange.updates >= 192 // 12 - 2
    assert record.largest_penalty_error < 1e-5  # the algorithm was paid r - lambda * c
    assert np.isfinite(model.replay_buffer.rewards[:model.replay_buffer.pos]).all()
