"""Rollout buffers that also hold a per-step cost, the cost critic's values and cost GAE.

SB3's buffers (and sb3-contrib's maskable ones) store rewards, values and reward GAE only.
A Lagrangian agent needs the same for the cost: the cost advantage ``A_c`` enters the
policy loss and the cost return is the cost critic's target. One mixin adds the arrays to
any of the four buffer kinds; minibatches gain ``old_cost_values``, ``cost_advantages``
and ``cost_returns`` next to the fields SB3's own samples have, so code that reads
SB3's fields by name is unaffected.

Filling: the algorithm writes ``costs[pos]`` and ``cost_values`` (see
:class:`agents.PPOLagrangian`) and calls :meth:`CostBufferMixin.compute_cost_returns_and_advantage`
after SB3 has computed the reward ones.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Generator
from typing import Any

import numpy as np
from sb3_contrib.common.maskable.buffers import (
    MaskableDictRolloutBuffer,
    MaskableDictRolloutBufferSamples,
    MaskableRolloutBuffer,
    MaskableRolloutBufferSamples,
)
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

from prune_gym.errors import InvalidArgumentError

COST_ARRAYS = ("costs", "cost_values", "cost_advantages", "cost_returns")
COST_FIELDS = ("old_cost_values", "cost_advantages", "cost_returns")


def gae(rewards: np.ndarray, values: np.ndarray, episode_starts: np.ndarray,
        last_values: np.ndarray, dones: np.ndarray, gamma: float, gae_lambda: float
        ) -> np.ndarray:
    """Generalised advantage estimates (Schulman et al. 2016) over a ``(steps, envs)`` rollout.

    The same recursion as SB3's ``RolloutBuffer.compute_returns_and_advantage``, written
    out because SB3's is tied to the buffer's reward and value arrays; the tests check that
    both agree on the same inputs.

    Args:
        rewards, values, episode_starts: ``(steps, envs)`` arrays (``episode_starts[t]`` is
            1 where step ``t`` began a new episode).
        last_values: ``(envs,)`` values of the observations after the last step.
        dones: ``(envs,)`` whether the last step ended an episode.
        gamma, gae_lambda: the discount and GAE's lambda.
    """
    steps = rewards.shape[0]
    advantages = np.zeros_like(rewards, dtype=np.float32)
    running = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(steps)):
        if t == steps - 1:
            not_done = 1.0 - np.asarray(dones, dtype=np.float64)
            next_values = np.asarray(last_values, dtype=np.float64)
        else:
            not_done = 1.0 - episode_starts[t + 1]
            next_values = values[t + 1]
        delta = rewards[t] + gamma * next_values * not_done - values[t]
        running = delta + gamma * gae_lambda * not_done * running
        advantages[t] = running
    return advantages


def _with_cost_fields(samples: type) -> type:
    """A namedtuple with ``samples``' fields and then the cost ones."""
    return namedtuple(f"Cost{samples.__name__}", (*samples._fields, *COST_FIELDS),
                      module=__name__)


CostRolloutBufferSamples = _with_cost_fields(RolloutBufferSamples)
CostDictRolloutBufferSamples = _with_cost_fields(DictRolloutBufferSamples)
MaskableCostRolloutBufferSamples = _with_cost_fields(MaskableRolloutBufferSamples)
MaskableCostDictRolloutBufferSamples = _with_cost_fields(MaskableDictRolloutBufferSamples)


class CostBufferMixin:
    """Adds ``costs``, ``cost_values``, ``cost_advantages`` and ``cost_returns`` to a
    rollout buffer (put it first in the bases).

    Args:
        cost_gae_lambda: GAE's lambda for the cost (the reward keeps ``gae_lambda``); the
            discount is the buffer's ``gamma``. Every other argument is the base buffer's.
    """

    samples_class: type
    buffer_size: int
    n_envs: int
    gamma: float
    full: bool
    generator_ready: bool
    episode_starts: np.ndarray

    def __init__(self, *args: Any, cost_gae_lambda: float = 0.95, **kwargs: Any):
        if isinstance(cost_gae_lambda, bool) or not isinstance(cost_gae_lambda, (int, float)) \
                or not 0.0 <= cost_gae_lambda <= 1.0:
            raise InvalidArgumentError(f"cost_gae_lambda must be a number in [0, 1]; got "
                                       f"{cost_gae_lambda!r}")
        self.cost_gae_lambda = float(cost_gae_lambda)
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        shape = (self.buffer_size, self.n_envs)
        for name in COST_ARRAYS:
            setattr(self, name, np.zeros(shape, dtype=np.float32))
        super().reset()  # type: ignore[misc]

    def compute_cost_returns_and_advantage(self, last_cost_values: np.ndarray,
                                           dones: np.ndarray) -> None:
        """Cost GAE and TD(lambda) cost returns, once ``costs`` and ``cost_values`` are in.

        Args:
            last_cost_values: ``(n_envs,)`` cost values of the observations after the last
                step.
            dones: ``(n_envs,)`` whether the last step ended an episode.
        """
        self.cost_advantages = gae(self.costs, self.cost_values, self.episode_starts,
                                   np.asarray(last_cost_values).reshape(-1), dones,
                                   self.gamma, self.cost_gae_lambda)
        self.cost_returns = self.cost_advantages + self.cost_values

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        if self.full and not self.generator_ready:
            # the base class flattens its arrays (steps, envs) -> (steps * envs) on first use;
            # ours must follow, in the same order
            for name in COST_ARRAYS:
                setattr(self, name, self.swap_and_flatten(getattr(self, name)))  # type: ignore[attr-defined]
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(self, batch_inds: np.ndarray, env: Any = None) -> Any:
        base = super()._get_samples(batch_inds, env)  # type: ignore[misc]
        extra = (self.cost_values[batch_inds].flatten(),
                 self.cost_advantages[batch_inds].flatten(),
                 self.cost_returns[batch_inds].flatten())
        return self.samples_class(*base, *map(self.to_torch, extra))  # type: ignore[attr-defined]


class CostRolloutBuffer(CostBufferMixin, RolloutBuffer):
    """SB3's ``RolloutBuffer`` with costs and cost GAE."""

    samples_class = CostRolloutBufferSamples


class CostDictRolloutBuffer(CostBufferMixin, DictRolloutBuffer):
    """SB3's ``DictRolloutBuffer`` (Dict observations) with costs and cost GAE."""

    samples_class = CostDictRolloutBufferSamples


class MaskableCostRolloutBuffer(CostBufferMixin, MaskableRolloutBuffer):
    """sb3-contrib's ``MaskableRolloutBuffer`` with costs and cost GAE."""

    samples_class = MaskableCostRolloutBufferSamples


class MaskableCostDictRolloutBuffer(CostBufferMixin, MaskableDictRolloutBuffer):
    """sb3-contrib's ``MaskableDictRolloutBuffer`` with costs and cost GAE."""

    samples_class = MaskableCostDictRolloutBufferSamples
