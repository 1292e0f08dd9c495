"""Wrappers: Safety-Gymnasium's 6-tuple, the cost penalty, and episode recording with
replay validation."""

from __future__ import annotations

import csv
import pickle

import gymnasium as gym
import numpy as np
import pytest

import prune_gym  # noqa: F401 - registers the environments
from prune_gym import ENV_IDS
from prune_gym.errors import DataError, InvalidArgumentError
from prune_gym.wrappers import (
    CostPenalty,
    EpisodeRecorder,
    SafetyGymnasiumAdapter,
    load_records,
    validate_records,
)


def play(env: gym.Env, episodes: int, seed: int = 0) -> list[tuple]:
    """Run episodes with seeded random actions; the last step of each."""
    env.action_space.seed(seed)
    last = []
    for i in range(episodes):
        env.reset(seed=seed + i)
        done = False
        while not done:
            out = env.step(env.action_space.sample())
            done = out[-3] or out[-2]
        last.append(out)
    return last


def test_safety_gymnasium_adapter_returns_cost_in_the_tuple(make) -> None:
    env = SafetyGymnasiumAdapter(make("DNNGraph-v0", budget=0.3, max_steps=2))
    obs, info = env.reset(seed=0)
    out = env.step(np.full(env.action_space.shape, -1.0, dtype=np.float32))
    assert len(out) == 6
    obs, reward, cost, terminated, truncated, info = out
    assert cost == info["cost"] == 0.0 and not (terminated or truncated)
    obs, reward, cost, terminated, truncated, info = env.step(
        np.full(env.action_space.shape, -1.0, dtype=np.float32))
    assert truncated and cost == info["cost"] > 0


def test_cost_penalty_subtracts_the_cost(make) -> None:
    plain = make("DNNGraph-v0", budget=0.3, max_steps=1)
    shaped = CostPenalty(make("DNNGraph-v0", budget=0.3, max_steps=1), coef=2.0)
    action = np.full(plain.action_space.shape, -0.5, dtype=np.float32)
    plain.reset()
    shaped.reset()
    _, r0, *_, info = plain.step(action)
    _, r1, *_ = shaped.step(action)
    assert info["cost"] > 0 and np.isclose(r1, r0 - 2.0 * info["cost"])
    with pytest.raises(InvalidArgumentError, match="coef"):
        CostPenalty(plain, coef=-1.0)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_recorder_writes_every_episode_and_replays(make, env_id, tmp_path) -> None:
    path = tmp_path / "episodes.csv"
    env = EpisodeRecorder(make(env_id, budget=0.5), path)
    finals = play(env, episodes=4)
    rows = load_records(path)
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    for row, (_, reward, *_, info) in zip(rows, finals):
        assert row["env_id"] == env_id and row["accuracy"] == info["accuracy"]
        assert row["macs"] == info["macs"] and row["cost"] == info["cost"]
        assert row["feasible"] == info["feasible"] and row["return"] == reward
    with path.open(newline="") as f:
        assert len(list(csv.reader(f))) == 5  # one header, one row per episode
    checked = validate_records(path, make(env_id, budget=0.5), evaluate=True)
    assert [c["ok"] for c in checked] == [True] * 4


def test_validation_catches_a_tampered_record(make, tmp_path) -> None:
    path = tmp_path / "episodes.csv"
    play(EpisodeRecorder(make("LayerRatio-v0"), path), episodes=2)
    rows = list(csv.DictReader(path.open(newline="")))
    rows[1]["macs"] = str(int(rows[1]["macs"]) + 1)
    rows[1]["accuracy"] = "1.0"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    checked = validate_records(path, make("LayerRatio-v0"), evaluate=True)
    assert checked[0]["ok"] and not checked[1]["ok"]
    assert {m[0] for m in checked[1]["mismatch"]} == {"macs", "accuracy"}


def test_records_from_another_env_are_refused(make, tmp_path) -> None:
    path = tmp_path / "episodes.csv"
    play(EpisodeRecorder(make("LayerRatio-v0"), path), episodes=1)
    with pytest.raises(DataError, match="LayerRatio-v0"):
        validate_records(path, make("ChannelMask-v0"))
    with pytest.raises(DataError, match="does not exist"):
        load_records(tmp_path / "missing.csv")


def test_recorder_pickles_and_keeps_appending(make, tmp_path) -> None:
    path = tmp_path / "episodes.csv"
    env = EpisodeRecorder(make("ChannelMask-v0"), path)
    play(env, episodes=1)
    clone = pickle.loads(pickle.dumps(env))
    play(clone, episodes=1, seed=5)
    assert [r["episode"] for r in load_records(path)] == [0, 1]
