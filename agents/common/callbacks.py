"""SB3 callbacks that make a training run a directory a person (and ``resume``) can use.

- :class:`BestStateCallback` keeps the best *feasible* keep state seen so far (by validation
  accuracy) in ``best.json``: for a pruning search the best state found is the product,
  whatever the policy's last action.
- :class:`RunCheckpointCallback` saves the agent, the state of a Lagrangian reward wrapper
  and the best state every ``every`` steps and on interruption, atomically, so that
  ``agents.train(..., resume=True)`` continues from the last one.

Both read only what the environments put in ``info`` at the end of an episode, so they work
with any SB3 algorithm and any vectorisation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from agents.run_dir import RunDirectory, best_state
from prune_gym.files import atomic_path, write_json_atomic

__all__ = ["BestStateCallback", "RunCheckpointCallback", "write_json_atomic"]


class BestStateCallback(BaseCallback):
    """Track the best feasible final state of the episodes (highest ``info["accuracy"]``).

    Args:
        run: the run directory whose ``best.json`` keeps it
            (:meth:`~agents.run_dir.RunDirectory.write_best`), or None to keep it in memory
            only. An existing file is read back, so a resumed run keeps the best of before.
    """

    def __init__(self, run: RunDirectory | None, verbose: int = 0):
        super().__init__(verbose)
        self.run = run
        self.best: dict[str, Any] | None = run.read_best() if run is not None else None
        self.episodes = 0
        self.feasible_episodes = 0

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        for i, info in enumerate(self.locals.get("infos", [])):
            if dones is None or not dones[i] or "accuracy" not in info:
                continue
            self.episodes += 1
            if not info.get("feasible", False):
                continue
            self.feasible_episodes += 1
            accuracy = float(info["accuracy"])
            if self.best is None or accuracy > self.best["accuracy"]:
                self.best = best_state(
                    accuracy=accuracy, keep_state=info.get("keep_state", info["keep"]),
                    macs_ratio=info["macs_ratio"], params_ratio=info["params_ratio"],
                    feasible=True, evaluations=info.get("evaluations"),
                    timestep=self.num_timesteps)
                if self.run is not None:
                    self.run.write_best(self.best)
        if self.best is not None:
            self.logger.record("rollout/best_feasible_accuracy", self.best["accuracy"])
        if self.episodes:
            self.logger.record("rollout/feasible_fraction",
                               self.feasible_episodes / self.episodes)
        return True


class RunCheckpointCallback(BaseCallback):
    """Save ``checkpoints/latest.zip`` (+ the reward wrapper's multiplier) every ``every`` steps.

    Args:
        run_dir: the run directory.
        every: timesteps between checkpoints (``math.inf``: only at the end / on interrupt).
        wrapper: a :class:`~agents.common.vec_env.LagrangianRewardWrapper` to save beside the
            agent, or None.
    """

    def __init__(self, run_dir: str | os.PathLike, every: float, wrapper=None, verbose: int = 0):
        super().__init__(verbose)
        self.dir = Path(run_dir) / "checkpoints"
        self.every = every
        self.wrapper = wrapper
        self._last = 0

    def save(self) -> Path:
        """Save now; return the agent's path."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self.dir / "latest.zip"
        with atomic_path(target) as tmp:  # its suffix (.part) keeps SB3 from adding .zip
            self.model.save(tmp)
        if self.wrapper is not None:
            self.wrapper.save(self.dir / "lagrangian.json")
        write_json_atomic({"timesteps": int(self.model.num_timesteps)},
                          self.dir / "latest.json")
        self._last = self.model.num_timesteps
        return target

    def _on_step(self) -> bool:
        if not math.isinf(self.every) and self.num_timesteps - self._last >= self.every:
            self.save()
        return True
