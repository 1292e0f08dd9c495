"""AMC on LayerRatio-v0: the presets train through agents.train and end every episode within
the budget; AMC's state, action, reward rewriting and exploration noise; the errors."""

from __future__ import annotations

import csv
import inspect
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.amc import (
    AMC_HYPERPARAMETERS,
    AMCDDPG,
    AMCTD3,
    FEATURES,
    STATE_SIZE,
    EpisodeRewardBuffer,
    TruncatedNormalNoise,
    check_amc_env,
    wrap_amc,
)
from agents.train import PRESETS, train
from prune_gym.errors import InvalidArgumentError

WARMUP = 2
EPISODES = 6


@pytest.fixture(scope="module")
def env_kwargs(task, net) -> dict:
    return {"model": net, "val_data": task.val_data, "eval_samples": 100}


@pytest.fixture(scope="module")
def resnet():
    from prune_gym.tasks import make_task

    return make_task("digits-resnet-v1")


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class FirstActor(BaseCallback):
    """The actor's weights when training starts."""

    def _on_training_start(self) -> None:
        self.weights = [p.detach().clone() for p in self.model.actor.parameters()]

    def _on_step(self) -> bool:
        return True


@pytest.fixture(scope="module", params=["amc", "amc-td3"])
def run(request, tmp_path_factory, env_kwargs):
    """A few AMC episodes through agents.train: WARMUP of uniform actions, then the actor."""
    path = tmp_path_factory.mktemp(request.param) / "run"
    first = FirstActor()
    groups = len(env_kwargs["model"].groups)
    result = train(preset=request.param, env_kwargs=env_kwargs, total_timesteps=EPISODES * groups,
                   algo_kwargs={"warmup_episodes": WARMUP, "batch_size": 16}, run_dir=path,
                   seed=0, callback=first)
    yield request.param, result, path, first
    result.env.close()


def test_amc_trains_and_every_final_state_is_feasible(run) -> None:
    preset, result, path, first = run
    model = result.model
    assert isinstance(model, AMCTD3 if preset == "amc-td3" else AMCDDPG)
    groups = model.episode_length
    assert model.learning_starts == WARMUP * groups  # the warm-up is counted in episodes
    assert model.buffer_size == 100 * groups  # AMC's rmsize: 100 transitions per layer
    episodes = rows(path / "episodes.csv")
    assert len(episodes) == EPISODES
    assert all(int(r["length"]) == groups for r in episodes)
    assert all(r["feasible"] == "1" for r in episodes)  # the action wall holds every budget
    assert all(float(r["macs_ratio"]) <= float(r["budget"]) + 1e-9 for r in episodes)
    # the episode's return is AMC's error reward
    for r in episodes:
        assert float(r["return"]) == pytest.approx(-(1.0 - float(r["accuracy"])), abs=1e-6)
    best = json.loads((path / "best.json").read_text())
    assert best["accuracy"] == pytest.approx(max(float(r["accuracy"]) for r in episodes))
    config = json.loads((path / "config.json").read_text())
    assert config["env_wrapper"] == "amc" and config["env_kwargs"]["constraint_mode"] == "project"
    # learning happened after the warm-up, each network at its own rate
    moved = [not torch.equal(a, b.detach()) for a, b in zip(first.weights,
                                                             model.actor.parameters())]
    assert any(moved)
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert model.gamma == 1.0 and model.tau == 0.01


def test_every_transition_holds_its_episodes_final_reward(run) -> None:
    _, result, path, _ = run
    buffer = result.model.replay_buffer
    assert isinstance(buffer, EpisodeRewardBuffer)
    groups = result.model.episode_length
    episodes = rows(path / "episodes.csv")
    for i, r in enumerate(episodes):
        final = -(1.0 - float(r["accuracy"]))
        stored = buffer.rewards[i * groups:(i + 1) * groups, 0]
        np.testing.assert_allclose(stored, final, atol=1e-6)
    assert buffer.baseline is not None and buffer.baseline < 0.0  # training drew batches


def test_exploration_samples_around_the_actor_after_the_warm_up(run) -> None:
    _, result, _, _ = run
    model = result.model
    obs = model.env.reset()
    model._last_obs = obs
    mean, _ = model.predict(obs, deterministic=True)
    drawn = np.array([model._sample_action(0, model.action_noise, 1)[0][0, 0]
                      for _ in range(200)])
    assert ((drawn >= 0.0) & (drawn <= 1.0)).all() and drawn.std() > 0.05
    assert abs(np.median(drawn) - mean[0, 0]) < 0.25  # centred near the actor's action
    action, buffered = model._sample_action(10**9, model.action_noise, 1)  # warm-up: uniform
    np.testing.assert_allclose(buffered, 2.0 * action - 1.0, atol=1e-6)


def test_an_amc_run_resumes(tmp_path, env_kwargs) -> None:
    groups = len(env_kwargs["model"].groups)
    kwargs = {"preset": "amc", "env_kwargs": env_kwargs, "run_dir": tmp_path / "run",
              "algo_kwargs": {"warmup_episodes": 1, "batch_size": 8}, "seed": 1}
    train(total_timesteps=2 * groups, **kwargs).env.close()
    result = train(total_timesteps=4 * groups, resume=True, **kwargs)
    assert isinstance(result.model, AMCDDPG) and result.model.num_timesteps == 4 * groups
    episodes = rows(tmp_path / "run" / "episodes.csv")
    assert len(episodes) == 4 and all(r["feasible"] == "1" for r in episodes)
    result.env.close()


def test_state_is_amcs_embedding_in_unit_range(resnet) -> None:
    env = wrap_amc(gym.make("LayerRatio-v0", model=resnet.model, val_data=resnet.val_data,
                            example_inputs=resnet.example_inputs, constraint_mode="project",
                            eval_samples=50))
    base = env.unwrapped
    assert env.observation_space.shape == (STATE_SIZE,) == (len(FEATURES),)
    column = {name: i for i, name in enumerate(FEATURES)}
    obs, info = env.reset(seed=0)
    states, done = [obs], False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.array([0.6], np.float32))
        done = terminated or truncated
        states.append(obs)
        assert env.observation_space.contains(obs)
        t = info["step"]
        if t < base.num_groups:
            assert reward == 0.0
        assert obs[column["reduced"]] == pytest.approx(1.0 - info["macs_ratio"], abs=1e-6)
        assert obs[column["previous_action"]] == pytest.approx(
            info["keep"][t - 1] / base.sizes[t - 1], abs=1e-6)
    states = np.stack(states)
    assert reward == pytest.approx(-(1.0 - info["accuracy"]))
    index = states[:-1, column["index"]]
    np.testing.assert_allclose(index, np.arange(base.num_groups) / (base.num_groups - 1),
                               atol=1e-6)
    assert states[0, column["previous_action"]] == 1.0 and states[0, column["reduced"]] == 0.0
    assert (np.diff(states[:, column["rest"]]) <= 1e-6).all()  # less network after each layer
    assert (np.diff(states[:, column["reduced"]]) >= -1e-6).all()
    # each feature is min-max normalised over the layers: some layer is 0, some 1
    for name in ("index", "n", "c", "h", "flops"):
        assert states[:-1, column[name]].min() == 0.0 and states[:-1, column[name]].max() == 1.0
    # n follows the groups' widths (16, 32, 64 channels -> 0, 1/3, 1)
    sizes = base.sizes.astype(float)
    np.testing.assert_allclose(states[:-1, column["n"]],
                               (sizes - sizes.min()) / (sizes.max() - sizes.min()), atol=1e-6)
    assert len({tuple(s) for s in states[:-1]}) == base.num_groups  # the state changes


def test_preserve_ratio_action_is_amcs(make) -> None:
    env = wrap_amc(make("LayerRatio-v0", budget=1.0, constraint_mode="project"))
    sizes = env.unwrapped.sizes
    assert env.action_space.low[0] == 0.0 and env.action_space.high[0] == 1.0
    env.reset(seed=0)
    kept = []
    for p in (0.5, 0.0, 1.0):  # no wall at budget 1: the ratio is kept as asked
        _, _, _, _, info = env.step(np.array([p], np.float32))
        kept = info["keep"]
    assert kept[0] == int(np.floor(sizes[0] * 0.5 + 0.5))
    assert kept[1] == int(np.floor(sizes[1] * 0.2 + 0.5))  # below lbound 0.2: keeps 0.2
    assert kept[2] == sizes[2]


def test_buffer_rewrites_episodes_across_the_ring_and_centres_batches() -> None:
    space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    buffer = EpisodeRewardBuffer(4, space, gym.spaces.Box(0.0, 1.0, (1,), np.float32),
                                 device="cpu", moving_alpha=0.5)
    obs, act = np.zeros((1, 2), np.float32), np.zeros((1, 1), np.float32)
    for rewards in ([0.0, 0.0, -0.3], [0.0, 0.0, -0.5]):
        for i, r in enumerate(rewards):
            done = i == len(rewards) - 1
            buffer.add(obs, obs, act, np.array([r]), np.array([done]), [{}])
    # the second episode wrapped around: rows 3, 0, 1; row 2 is the first episode's last
    np.testing.assert_allclose(buffer.rewards[:, 0], [-0.5, -0.5, -0.3, -0.5])
    first = buffer.sample(32)
    raw = first.rewards.numpy().ravel() + buffer.baseline
    assert np.minimum(abs(raw + 0.3), abs(raw + 0.5)).max() < 1e-5  # stored ones, centred
    assert buffer.baseline == pytest.approx(raw.mean(), abs=1e-6)  # the first batch sets it
    before = buffer.baseline
    second = buffer.sample(32)
    mean = float((second.rewards.numpy().ravel() + buffer.baseline).mean())
    assert buffer.baseline == pytest.approx(before + 0.5 * (mean - before), abs=1e-6)


def test_noise_is_truncated_within_bounds_and_decays_after_the_warm_up() -> None:
    noise = TruncatedNormalNoise(0.5, 0.95, warmup_episodes=10, seed=0)
    assert noise.width(0) == noise.width(10) == 0.5
    assert noise.width(11) == pytest.approx(0.475)
    assert noise.width(30) == pytest.approx(0.5 * 0.95 ** 20)
    mean = np.full((4000, 1), 0.9)
    early, late = noise.sample(mean, 10), noise.sample(mean, 60)
    for drawn in (early, late):
        assert drawn.shape == mean.shape and ((drawn >= 0.0) & (drawn <= 1.0)).all()
    assert (early == 1.0).mean() < 0.01  # truncated, not clipped (clipping piles ~40 % on 1)
    assert early.mean() < 0.8  # the mass cut above 1 moves the mean down
    assert late.std() < 0.5 * early.std()
    assert noise.sample(mean[:3], 10).tolist() != noise.sample(mean[:3], 10).tolist()
    with pytest.raises(InvalidArgumentError, match="amc_ddpg"):
        noise()


def test_presets_are_amcs_published_settings() -> None:
    for name, algo in (("amc", AMCDDPG), ("amc-td3", AMCTD3)):
        preset = PRESETS[name]
        assert preset.env_id == "LayerRatio-v0" and preset.env_wrapper == "amc"
        assert preset.env_kwargs["constraint_mode"] == "project"
        assert preset.policy_kwargs["net_arch"] == [300, 300]
        assert preset.algo_kwargs == AMC_HYPERPARAMETERS
        defaults = inspect.signature(algo.__init__).parameters
        for key, value in AMC_HYPERPARAMETERS.items():
            assert defaults[key].default == value, key


def test_amc_refuses_other_environments(make, env_kwargs) -> None:
    with pytest.raises(InvalidArgumentError, match="env must be a LayerRatio-v0"):
        check_amc_env(make("DNNGraph-v0"))
    with pytest.raises(InvalidArgumentError, match="constraint_mode='cmdp'"):
        wrap_amc(make("LayerRatio-v0"))
    with pytest.raises(InvalidArgumentError, match="constraint_mode='cmdp'"):
        train(preset="amc", env_kwargs={**env_kwargs, "constraint_mode": "cmdp"},
              total_timesteps=3)
    with pytest.raises(InvalidArgumentError, match="env must be AMC's environment"):
        AMCDDPG("MlpPolicy", make("LayerRatio-v0", constraint_mode="project"))
    with pytest.raises(InvalidArgumentError, match="env must be AMC's environment"):
        train("DNNGraph-v0", "amc_td3", env_kwargs=env_kwargs, policy="MultiInputPolicy")
    amc_env = wrap_amc(make("LayerRatio-v0", constraint_mode="project"))
    with pytest.raises(InvalidArgumentError, match="learning_starts is set"):
        AMCDDPG("MlpPolicy", amc_env, learning_starts=5)
    with pytest.raises(InvalidArgumentError, match="delta_decay"):
        AMCDDPG("MlpPolicy", amc_env, delta_decay=1.5)
    with pytest.raises(InvalidArgumentError, match="env_wrapper='nope'"):
        train(preset="amc", env_wrapper="nope")
