"""AMC's environment: LayerRatio-v0 with the action wall, a preserve-ratio action in [0, 1],
AMC's state and its error reward.

Actions. AMC's actor outputs a preserve ratio in [0, 1] through a sigmoid; its environment
(mit-han-lab/amc, ``env/channel_pruning_env.py``, ``_action_wall``) clips it to [0, 1],
lowers it to what keeps the FLOPs budget reachable and raises it to ``lbound`` (0.2 in
``amc_search.py`` and ``scripts/search_mobilenet_0.5flops.sh``), so a layer keeps between
20 % and 100 % of its channels. LayerRatio-v0 prunes ``(a + 1) / 2 * max_ratio`` for
``a`` in [-1, 1], ``max_ratio`` 0.8 by default (AMC's ``1 - lbound``), and its
``constraint_mode="project"`` is the wall. :class:`PreserveRatioAction` maps a preserve
ratio ``p`` to the prune ratio ``1 - max(p, 1 - max_ratio)``, exactly AMC's clip: ratios
below ``1 - max_ratio`` all keep ``1 - max_ratio``. Kept channels are rounded half up (AMC
rounds and then to a multiple of 8 channels, which small networks cannot afford).

Reward. The paper's resource-constrained ``R_err = -Error``: ``-(1 - accuracy)`` on the last step
(top-1 on the validation subset), 0 before. The code's default ``acc_reward``
(``env/rewards.py``) is ``accuracy`` itself, the same up to a constant that the agent's
moving-average baseline removes.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agents.amc.state import AMCObservation
from prune_gym.errors import InvalidArgumentError


def check_amc_env(env) -> gym.Env:
    """``env`` if it is LayerRatio-v0 with ``constraint_mode="project"``, else an error.

    AMC decides one layer at a time and relies on the action wall to end every episode
    within the budget; another environment or the CMDP mode is not AMC.
    """
    from prune_gym.envs.layer_ratio import LayerRatioEnv

    base = getattr(env, "unwrapped", None)
    if not isinstance(base, LayerRatioEnv):
        name = getattr(base, "env_id", "") or type(base if base is not None else env).__name__
        raise InvalidArgumentError(
            f"env must be a LayerRatio-v0 environment for AMC (one prune ratio per group, "
            f"in forward order); got {name}. Make it with gym.make('LayerRatio-v0', "
            "constraint_mode='project')")
    if base.constraint_mode != "project":
        raise InvalidArgumentError(
            f"env has constraint_mode={base.constraint_mode!r}; AMC needs "
            "constraint_mode='project' (its action wall keeps every episode within the "
            "budget). Make it with gym.make('LayerRatio-v0', constraint_mode='project')")
    return env


class PreserveRatioAction(gym.ActionWrapper):
    """Actions are AMC's preserve ratios in [0, 1] (see the module docstring)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.max_ratio = float(env.unwrapped.max_ratio)
        self.action_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)

    def action(self, action) -> np.ndarray:
        preserve = np.clip(np.asarray(action, dtype=np.float64).reshape(1), 0.0, 1.0)
        prune = 1.0 - np.maximum(preserve, 1.0 - self.max_ratio)
        return np.clip(2.0 * prune / self.max_ratio - 1.0, -1.0, 1.0).astype(np.float32)


class ErrorReward(gym.Wrapper):
    """AMC's ``R_err``: ``-(1 - info["accuracy"])`` when the episode ends, 0 before."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            reward = -(1.0 - float(info["accuracy"]))
        else:
            reward = 0.0
        return obs, reward, terminated, truncated, info


def wrap_amc(env: gym.Env) -> gym.Env:
    """AMC's environment around a LayerRatio-v0 in project mode: its state, its preserve-ratio
    action and its error reward (the env's own reward is replaced)."""
    check_amc_env(env)
    return ErrorReward(PreserveRatioAction(AMCObservation(env)))
