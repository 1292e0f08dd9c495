"""AMC's exploration: the actor's action resampled from a truncated normal around itself.

mit-han-lab/amc, ``lib/agent.py`` (``select_action``): after the warm-up, the action is
drawn from a normal distribution centred on the actor's output with standard deviation
``delta = init_delta * delta_decay ** (episode - warmup)``, truncated to the action bounds
([0, 1]); ``amc_search.py`` sets ``init_delta`` 0.5 and ``delta_decay`` 0.95. Truncating
keeps the exploration inside the bounds without piling probability onto them, as clipping
additive Gaussian noise would. The warm-up itself draws uniform actions (``random_action``)
and is SB3's ``learning_starts``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from stable_baselines3.common.noise import ActionNoise

from prune_gym.arguments import check_int, check_number
from prune_gym.errors import InvalidArgumentError


class TruncatedNormalNoise(ActionNoise):
    """A truncated normal around a given action whose width decays once per episode.

    The width in episode ``e`` (counted from 0, warm-up included) is ``init_delta`` up to
    the first episode after ``warmup_episodes`` and is multiplied by ``delta_decay`` for each
    further one. The caller says which episode it is: :class:`~agents.amc.AMCDDPG` and
    :class:`~agents.amc.AMCTD3` pass SB3's count of finished episodes, which survives a
    resume, where counting :meth:`reset` calls would not (SB3 also resets the noise at every
    ``learn()``). It needs the action it perturbs, so they call :meth:`sample`; SB3's
    additive ``noise()`` call is refused rather than silently turned into clipped noise.

    Args:
        init_delta: initial standard deviation, in action units.
        delta_decay: factor per episode after the warm-up, in (0, 1].
        warmup_episodes: episodes of uniform actions before the actor acts.
        low, high: the action bounds the samples are truncated to.
        seed: seeds the sampler.
    """

    def __init__(self, init_delta: float = 0.5, delta_decay: float = 0.95,
                 warmup_episodes: int = 100, low: float = 0.0, high: float = 1.0,
                 seed: int | None = None):
        super().__init__()
        self.sigma = check_number(init_delta, "init_delta", low=0.0, low_open=False,
                                  meaning="the exploration noise's initial width")
        self.decay = check_number(delta_decay, "delta_decay", low=0.0, high=1.0,
                                  meaning="the exploration noise's decay per episode")
        self.warmup_episodes = check_int(warmup_episodes, "warmup_episodes",
                                         meaning="episodes of random actions")
        self.low = check_number(low, "low", meaning="the lowest action")
        self.high = check_number(high, "high", low=self.low, meaning="the highest action")
        self._rng = np.random.default_rng(seed)

    def width(self, episode: int) -> float:
        """The standard deviation used in ``episode``."""
        return self.sigma * self.decay ** max(0, episode - self.warmup_episodes)

    def sample(self, mean, episode: int) -> np.ndarray:
        """Draw actions from N(mean, width(episode)) truncated to [low, high] (``mean`` is
        clipped into the bounds first, as the actor's output always is)."""
        mean = np.clip(np.asarray(mean, dtype=np.float64), self.low, self.high)
        sigma = self.width(episode)
        if sigma == 0.0:
            return mean
        a, b = (self.low - mean) / sigma, (self.high - mean) / sigma
        drawn = stats.truncnorm.rvs(a, b, loc=mean, scale=sigma, size=mean.shape,
                                    random_state=self._rng)
        return np.clip(drawn, self.low, self.high)  # guard against float round-off

    def __call__(self) -> np.ndarray:
        raise InvalidArgumentError(
            "action_noise=TruncatedNormalNoise resamples around the actor's action, which "
            "an additive noise() call does not see; use it with agents.amc.AMCDDPG or "
            "AMCTD3 (algo='amc_ddpg' or 'amc_td3'), or give plain DDPG/TD3 an SB3 noise")

    def __repr__(self) -> str:
        return (f"TruncatedNormalNoise(init_delta={self.sigma}, delta_decay={self.decay}, "
                f"warmup_episodes={self.warmup_episodes}, low={self.low}, high={self.high})")
