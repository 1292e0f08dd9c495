"""agents.train: the run directory, the best feasible state, checkpoints, resume after an
interruption, presets, and the errors a user meets."""

from __future__ import annotations

import csv
import json

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback

from agents.train import PRESETS, RunDirectoryError, load_agent, train
from prune_gym.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def env_kwargs(task, net) -> dict:
    return {"model": net, "val_data": task.val_data, "eval_samples": 100}


SMALL = {"n_steps": 32, "batch_size": 32, "n_epochs": 2}


class Interrupt(BaseCallback):
    """Ctrl-C after ``at`` timesteps."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.at:
            raise KeyboardInterrupt
        return True


def rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_directory_holds_everything_a_person_needs(tmp_path, env_kwargs) -> None:
    run = tmp_path / "run"
    result = train("DNNGraph-v0", PPO, total_timesteps=96, env_kwargs=env_kwargs,
                   algo_kwargs=SMALL, policy_kwargs={"net_arch": [16]}, run_dir=run, seed=3)
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "progress.csv", "episodes.csv", "best.json", "model.zip",
            "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    config = json.loads((run / "config.json").read_text())
    assert config["env_id"] == "DNNGraph-v0" and config["seed"] == 3
    assert config["env_kwargs"]["model"].startswith("<prune_gym.network.PrunableNetwork")
    episodes = rows(run / "episodes.csv")
    assert len(episodes) >= 10 and result.model.num_timesteps >= 96
    assert "rollout/best_feasible_accuracy" in rows(run / "progress.csv")[0]
    # the best state is the best feasible episode of the record, and it re-evaluates exactly
    best = json.loads((run / "best.json").read_text())
    feasible = [float(r["accuracy"]) for r in episodes if r["feasible"] == "1"]
    assert best["accuracy"] == pytest.approx(max(feasible))
    env = result.env.envs[0].unwrapped
    assert env.evaluate_state(best["keep_state"]) == pytest.approx(best["accuracy"])
    assert env.net.macs(best["keep_state"]) <= env.budget * env.net.base_macs
    result.env.close()


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, env_kwargs) -> None:
    run = tmp_path / "run"
    kwargs = {"env_kwargs": env_kwargs, "algo_kwargs": SMALL,
              "policy_kwargs": {"net_arch": [16]}, "run_dir": run}
    with pytest.raises(KeyboardInterrupt):
        train("LayerRatio-v0", "ppo", total_timesteps=200, callback=Interrupt(70), **kwargs)
    saved = json.loads((run / "checkpoints" / "latest.json").read_text())["timesteps"]
    assert 64 <= saved < 200 and (run / "checkpoints" / "latest.zip").is_file()
    before = len(rows(run / "episodes.csv"))
    with pytest.raises(RunDirectoryError, match="resume=True"):
        train("LayerRatio-v0", "ppo", total_timesteps=200, **kwargs)
    with pytest.raises(RunDirectoryError, match="algo='ppo', not 'a2c'"):
        train("LayerRatio-v0", "a2c", total_timesteps=200, resume=True, **kwargs)
    result = train("LayerRatio-v0", "ppo", total_timesteps=200, resume=True, **kwargs)
    assert result.model.num_timesteps >= 200
    assert result.model.num_timesteps - saved < 200  # continued, not restarted
    assert len(rows(run / "episodes.csv")) > before  # the record goes on
    result.env.close()
    with pytest.raises(RunDirectoryError, match="no run to resume"):
        train("LayerRatio-v0", "ppo", run_dir=tmp_path / "empty", resume=True,
              env_kwargs=env_kwargs)


def test_a_checkpoint_for_other_spaces_is_refused_by_name(tmp_path, env_kwargs) -> None:
    import gymnasium as gym

    result = train("DNNGraph-v0", "ppo", total_timesteps=32, env_kwargs=env_kwargs,
                   algo_kwargs=SMALL, run_dir=tmp_path / "a")
    result.env.close()
    other = gym.make("DNNGraph-v0", **env_kwargs, max_groups=8)
    with pytest.raises(InvalidArgumentError, match="observation_space"):
        load_agent(tmp_path / "a" / "model.zip", other, "ppo")


@pytest.mark.parametrize("kwargs, words", [
    ({"env_id": "Nope-v0", "algo": "ppo"}, "env_id='Nope-v0'"),
    ({"env_id": "DNNGraph-v0", "algo": "dqn"}, "algo='dqn'"),
    ({"preset": "amc2"}, "preset='amc2'"),
    ({"preset": "malik", "env_id": "DNNGraph-v0"}, "runs on LayerRatio-v0"),
    ({"env_id": "DNNGraph-v0"}, "algo is required"),
    ({"env_id": "DNNGraph-v0", "algo": "ppo", "total_timesteps": 0}, "total_timesteps"),
    ({"env_id": "DNNGraph-v0", "algo": "ppo", "vec_env": "async"}, "vec_env='async'"),
    ({"env_id": "DNNGraph-v0", "algo": "ppo", "n_envs": 0}, "n_envs"),
    ({"env_id": "DNNGraph-v0", "algo": "ppo", "seed": -1}, "seed"),
    ({"env_id": "DNNGraph-v0", "algo": "ppo_lagrangian", "lagrangian_wrapper": {}},
     "own multiplier"),
])
def test_bad_arguments_are_named(kwargs, words) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        train(**kwargs)


def test_presets_name_their_published_setups() -> None:
    assert set(PRESETS) >= {"gnnrl", "balemans", "malik"}
    assert PRESETS["gnnrl"].env_id == "DNNGraph-v0"
    assert PRESETS["balemans"].env_id == "ChannelMask-v0"
    assert PRESETS["malik"].env_id == "LayerRatio-v0"


@pytest.mark.parametrize("preset", ["gnnrl", "balemans", "malik"])
def test_every_preset_trains_and_keeps_its_best_state(tmp_path, env_kwargs, preset) -> None:
    small = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
    result = train(preset=preset, total_timesteps=64, env_kwargs=env_kwargs,
                   algo_kwargs=small, run_dir=tmp_path / preset, seed=0)
    model = result.model
    assert model.num_timesteps >= 64
    assert model.cost_key == "signed_cost" and model.cost_limit == 0.0
    # the multiplier is exactly the rule replayed on the episode costs the run logged
    replay = model._make_lagrange()
    progress = rows(tmp_path / preset / "progress.csv")
    for row in progress:
        if row.get("train/lagrange_ep_cost"):
            replay.update(float(row["train/lagrange_ep_cost"]))
    assert replay.updates == model.lagrange.updates >= 1
    assert model.lagrange_multiplier == pytest.approx(replay.value, rel=1e-12)
    best = json.loads((tmp_path / preset / "best.json").read_text())
    assert result.best == best and best["macs_ratio"] <= 0.5  # feasible, kept on disk
    config = json.loads((tmp_path / preset / "config.json").read_text())
    assert config["preset"] == preset and config["env_id"] == PRESETS[preset].env_id
    assert "train/lagrange_multiplier" in progress[-1]
    result.env.close()


def test_any_algorithm_under_the_lagrangian_wrapper(tmp_path, env_kwargs) -> None:
    env_kwargs = {**env_kwargs, "budget": 0.2}  # random states mostly violate: lambda rises
    result = train("LayerRatio-v0", "td3", total_timesteps=96, env_kwargs=env_kwargs,
                   algo_kwargs={"learning_starts": 32, "buffer_size": 500, "batch_size": 32},
                   policy_kwargs={"net_arch": [16]}, run_dir=tmp_path / "td3",
                   lagrangian_wrapper={"cost_key": "signed_cost", "cost_limit": 0.0,
                                       "update_interval": 32})
    saved = tmp_path / "td3" / "checkpoints" / "lagrangian.json"
    assert saved.is_file()
    assert result.env.lagrange_multiplier > 0.0  # it moved from its start
    lam = result.env.lagrange_multiplier
    result.env.close()

    class FirstLambda(BaseCallback):
        def _on_training_start(self) -> None:
            self.value = self.training_env.lagrange_multiplier

        def _on_step(self) -> bool:
            return True

    first = FirstLambda()
    resumed = train("LayerRatio-v0", "td3", total_timesteps=128, env_kwargs=env_kwargs,
                    algo_kwargs={"learning_starts": 32, "buffer_size": 500, "batch_size": 32},
                    policy_kwargs={"net_arch": [16]}, run_dir=tmp_path / "td3", resume=True,
                    lagrangian_wrapper={"cost_key": "signed_cost", "cost_limit": 0.0,
                                        "update_interval": 32}, callback=first)
    assert first.value == pytest.approx(lam)  # the multiplier came back with the agent
    resumed.env.close()
