"""AMC's credit assignment: every transition of an episode is paid the episode's final
reward, and a moving-average baseline is subtracted when a batch is drawn.

mit-han-lab/amc, ``amc_search.py`` (``train``): when an episode ends, each of its
transitions is stored with ``final_reward = T[-1][0]``; ``lib/agent.py``
(``update_policy``) then subtracts from every sampled batch a moving average of the batch
means, ``ma += moving_alpha * (mean - ma)`` with ``moving_alpha`` 0.5 (the first batch sets
it). With ``discount`` 1.0 the critic then learns, for every layer, how much better than
usual the whole episode went.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from prune_gym.arguments import check_number


class EpisodeRewardBuffer(ReplayBuffer):
    """A replay buffer that rewrites a finished episode's rewards with its last one and
    centres sampled rewards on a moving average of batch means.

    Args:
        moving_alpha: step of the moving-average baseline, in (0, 1].
        (the rest as :class:`~stable_baselines3.common.buffers.ReplayBuffer`)
    """

    def __init__(self, buffer_size: int, observation_space, action_space, device="auto",
                 n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, moving_alpha: float = 0.5):
        super().__init__(buffer_size, observation_space, action_space, device=device,
                         n_envs=n_envs, optimize_memory_usage=optimize_memory_usage,
                         handle_timeout_termination=handle_timeout_termination)
        self.moving_alpha = check_number(moving_alpha, "moving_alpha", low=0.0, high=1.0,
                                         meaning="the reward baseline's step")
        self.baseline: float | None = None
        self._episode_steps = np.zeros(self.n_envs, dtype=np.int64)

    def add(self, obs, next_obs, action, reward, done, infos: list[dict[str, Any]]) -> None:
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        self._episode_steps += 1
        for env in np.flatnonzero(np.asarray(done).reshape(-1)):
            length = min(int(self._episode_steps[env]), self.buffer_size)
            rows = (row - np.arange(length)) % self.buffer_size
            self.rewards[rows, env] = self.rewards[row, env]
            self._episode_steps[env] = 0

    def sample(self, batch_size: int, env=None) -> ReplayBufferSamples:
        samples = super().sample(batch_size, env=env)
        mean = float(samples.rewards.mean())
        if self.baseline is None:
            self.baseline = mean
        else:
            self.baseline += self.moving_alpha * (mean - self.baseline)
        return samples._replace(rewards=samples.rewards - self.baseline)
