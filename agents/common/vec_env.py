"""A Lagrangian reward for any SB3 algorithm: ``reward - lambda * cost``, lambda learned.

:class:`agents.PPOLagrangian` builds the constraint into PPO's update. Off-policy
algorithms (SAC, TD3, DDPG, sb3-contrib's TQC) and A2C have no such hook, but they all
read the reward from a ``VecEnv``; this wrapper pays them ``r - lambda * c`` and learns
``lambda`` from the episode costs it sees. It is a ``VecEnvWrapper`` because ``lambda``
must be one number for all workers of a ``SubprocVecEnv``: it lives here, in the main
process, and every worker's reward is penalised with the same value.

One caveat for replay-buffer algorithms: a transition keeps the penalty of the ``lambda``
at the time it was collected; ``info["original_reward"]`` and the cost are in ``info``
for anyone who relabels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from agents.common.lagrangian import Lagrangian, costs_from_infos
from prune_gym.errors import CheckpointError, InvalidArgumentError

SAVE_FORMAT = "prune-gym LagrangianRewardWrapper"
SAVE_VERSION = 1


class LagrangianRewardWrapper(VecEnvWrapper):
    """Pays ``reward - lambda * info[cost_key]`` and learns ``lambda`` from episode costs.

    Every ``update_interval`` environment steps (summed over workers), ``lambda`` takes one
    step of its rule from the mean cost of the episodes that ended since the last update;
    if none ended, the update waits for the first that does. Each step's ``info`` gains
    ``original_reward`` (the env's reward) and ``lagrange_multiplier`` (the ``lambda``
    applied); the last step of an episode also ``episode_cost``. A ``Monitor`` inside the
    vector env therefore logs the original return as ``rollout/ep_rew_mean``.

    Args:
        venv: a ``VecEnv``; a single ``gym.Env`` is wrapped in ``Monitor`` (unless it has
            one) and a ``DummyVecEnv``, as SB3 would.
        cost_limit: the limit ``d`` on the mean episode cost (>= 0).
        cost_key: the ``info`` key of the per-step cost (prune-gym: ``"cost"`` or
            ``"signed_cost"``; see :class:`agents.PPOLagrangian`).
        lagrangian: the multiplier's rule, ``"gradient"`` or ``"pid"``.
        lagrangian_kwargs: the multiplier's other arguments (see
            :class:`agents.common.lagrangian.Lagrangian`).
        update_interval: environment steps between updates (int >= 1). The default, 1000,
            is our choice (no reference gives one): of the order of one PPO rollout
            (SB3's ``n_steps=2048``), so ``lambda`` moves about as often as in
            PPO-Lagrangian.

    Save and restore ``lambda`` like ``VecNormalize``'s statistics: ``wrapper.save(path)``
    and ``LagrangianRewardWrapper.load(path, venv)``.
    """

    def __init__(self, venv: VecEnv | gym.Env, cost_limit: float = 0.0, cost_key: str = "cost",
                 lagrangian: str = "gradient", lagrangian_kwargs: dict[str, Any] | None = None,
                 update_interval: int = 1000):
        if isinstance(venv, gym.Env):
            env = venv if is_wrapped(venv, Monitor) else Monitor(venv)
            venv = DummyVecEnv([lambda: env])
        elif not isinstance(venv, VecEnv):
            raise InvalidArgumentError(f"venv must be a stable_baselines3 VecEnv or a gym.Env; "
                                       f"got {type(venv).__name__}")
        if not isinstance(cost_key, str) or not cost_key:
            raise InvalidArgumentError(f"cost_key must be a non-empty str (the info key of the "
                                       f"per-step cost); got {cost_key!r}")
        if isinstance(update_interval, bool) or not isinstance(update_interval, (int, np.integer)) \
                or update_interval < 1:
            raise InvalidArgumentError(f"update_interval must be an int >= 1 (environment steps "
                                       f"between multiplier updates); got {update_interval!r}")
        if lagrangian_kwargs is not None and not isinstance(lagrangian_kwargs, dict):
            raise InvalidArgumentError(f"lagrangian_kwargs must be a dict or None; got "
                                       f"{type(lagrangian_kwargs).__name__}")
        self.lagrange = Lagrangian(cost_limit, lagrangian, **(lagrangian_kwargs or {}))
        super().__init__(venv)
        self.cost_key = cost_key
        self.update_interval = int(update_interval)
        self._episode_costs = np.zeros(self.num_envs)
        self._finished: list[float] = []  # costs of episodes ended since the last update
        self._steps_since_update = 0
        self._original_rewards = np.zeros(self.num_envs, dtype=np.float32)

    @property
    def lagrange_multiplier(self) -> float:
        """The current ``lambda``."""
        return self.lagrange.value

    def reset(self) -> Any:
        self._episode_costs[:] = 0.0  # the envs restart their episodes
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        costs = costs_from_infos(infos, self.cost_key)
        lam = self.lagrange.value
        self._original_rewards = np.array(rewards, copy=True)
        penalised = (rewards - lam * costs).astype(np.asarray(rewards).dtype)
        self._episode_costs += costs
        for i, info in enumerate(infos):
            info["original_reward"] = float(self._original_rewards[i])
            info["lagrange_multiplier"] = lam
            if dones[i]:
                info["episode_cost"] = float(self._episode_costs[i])
                self._finished.append(float(self._episode_costs[i]))
                self._episode_costs[i] = 0.0
        self._steps_since_update += self.num_envs
        if self._steps_since_update >= self.update_interval and self._finished:
            self.lagrange.update(float(np.mean(self._finished)))
            self._finished = []
            self._steps_since_update = 0
        return obs, penalised, dones, infos

    def get_original_reward(self) -> np.ndarray:
        """The rewards of the last step before the penalty (as ``VecNormalize`` has)."""
        return self._original_rewards.copy()

    # -- saving ----------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The wrapper's configuration and ``lambda``'s state, JSON-serialisable."""
        return {"format": SAVE_FORMAT, "version": SAVE_VERSION, "cost_key": self.cost_key,
                "update_interval": self.update_interval, "lagrangian": self.lagrange.state_dict(),
                "finished_episode_costs": list(self._finished),
                "steps_since_update": self._steps_since_update}

    def save(self, path: str | Path) -> None:
        """Write :meth:`state` as JSON (the envs themselves are not saved)."""
        Path(path).write_text(json.dumps(self.state(), indent=1))

    @classmethod
    def load(cls, path: str | Path, venv: VecEnv | gym.Env) -> LagrangianRewardWrapper:
        """A wrapper around ``venv`` that continues from a file written by :meth:`save`.

        Raises:
            CheckpointError: the file is missing, not JSON, or not a saved wrapper.
        """
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot read a LagrangianRewardWrapper from {path}: {err}") \
                from err
        if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
            raise CheckpointError(f"{path} is not a file written by LagrangianRewardWrapper.save")
        try:
            config = dict(state["lagrangian"]["config"])
            cost_limit, rule = config.pop("cost_limit"), config.pop("rule")
            cost_key, interval = state["cost_key"], state["update_interval"]
            finished = [float(c) for c in state["finished_episode_costs"]]
            steps = int(state["steps_since_update"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path} lacks or mangles a field of a saved "
                                  f"LagrangianRewardWrapper: {err!r}") from err
        wrapper = cls(venv, cost_limit=cost_limit, cost_key=cost_key, lagrangian=rule,
                      lagrangian_kwargs=config, update_interval=interval)
        wrapper.lagrange.load_state_dict(state["lagrangian"])
        wrapper._finished = [c for c in finished if math.isfinite(c)]
        wrapper._steps_since_update = steps
        return wrapper
