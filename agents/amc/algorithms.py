"""AMC's DDPG agent as SB3's DDPG (and TD3), with AMC's published settings as defaults.

Settings (mit-han-lab/amc, ``amc_search.py`` defaults, ``lib/agent.py``): actor and critic
with two hidden layers of 300 (``hidden1``/``hidden2``), Adam with ``lr_a`` 1e-4 for the
actor and ``lr_c`` 1e-3 for the critic, ``tau`` 0.01, ``discount`` 1.0, batches of 64
(``bsize``), a replay memory of 100 transitions per layer (``rmsize``), 100 warm-up episodes
of uniform actions (``warmup``; the code's ``episode <= warmup`` makes that 101), then a
truncated normal around the actor's action with ``init_delta`` 0.5 and ``delta_decay`` 0.95
(:mod:`agents.amc.noise`), and one update per stored transition after each episode
(``train_freq=(1, "episode")``, ``gradient_steps=-1``). Rewards: the episode's final one on
every transition, minus a moving-average baseline with ``moving_alpha`` 0.5
(:mod:`agents.amc.buffer`). The code trains 800 episodes (``train_episode``).

Two things differ from the code by construction. SB3's actor ends in ``tanh`` scaled onto
[0, 1], i.e. ``sigmoid(2x)``: AMC's sigmoid with the last layer's weights doubled. SB3's
critic reads ``concat(state, action)`` into its first layer, which is AMC's
``fc11(state) + fc12(action)`` with one bias instead of two. TD3 (``AMCTD3``) adds its
twin critics, delayed actor updates and target smoothing (SB3's defaults) to the same setup.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.noise import VectorizedActionNoise
from stable_baselines3.common.utils import update_learning_rate
from stable_baselines3.common.vec_env import VecEnv

from agents.amc.buffer import EpisodeRewardBuffer
from agents.amc.noise import TruncatedNormalNoise
from agents.amc.state import AMCObservation
from prune_gym.arguments import check_int, check_number
from prune_gym.errors import InvalidArgumentError

# The values above, as keyword arguments of AMCDDPG / AMCTD3 (and of the "amc" presets).
AMC_HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 1e-4, "critic_learning_rate": 1e-3, "tau": 0.01, "gamma": 1.0,
    "batch_size": 64, "warmup_episodes": 100, "memory_per_layer": 100, "init_delta": 0.5,
    "delta_decay": 0.95, "moving_alpha": 0.5,
}
AMC_NET_ARCH = [300, 300]
# set from the arguments above and the env's episode length; refused if given directly
_DERIVED = ("learning_starts", "buffer_size", "action_noise", "replay_buffer_class",
            "replay_buffer_kwargs")


def _truncated_noise(action_noise) -> TruncatedNormalNoise | None:
    """The truncated-normal sampler in ``action_noise`` (SB3 wraps it in a
    VectorizedActionNoise of copies when there are several envs), or None."""
    if isinstance(action_noise, VectorizedActionNoise):
        action_noise = action_noise.base_noise
    return action_noise if isinstance(action_noise, TruncatedNormalNoise) else None


class _AMC:
    """What AMCDDPG and AMCTD3 share (mixed in before the SB3 class)."""

    def __init__(self, policy, env, learning_rate=1e-4, *, critic_learning_rate: float = 1e-3,
                 batch_size: int = 64, tau: float = 0.01, gamma: float = 1.0,
                 train_freq=(1, "episode"), gradient_steps: int = -1,
                 warmup_episodes: int = 100, memory_per_layer: int = 100,
                 init_delta: float = 0.5, delta_decay: float = 0.95,
                 moving_alpha: float = 0.5, policy_kwargs: dict | None = None,
                 _init_setup_model: bool = True, **kwargs):
        given = [k for k in _DERIVED if k in kwargs]
        if given:
            raise InvalidArgumentError(
                f"{given[0]} is set by {type(self).__name__} from AMC's episode-based settings "
                "(learning_starts = warmup_episodes x groups, buffer_size = memory_per_layer x "
                "groups, the truncated-normal noise and the episode-reward buffer); pass "
                "warmup_episodes, memory_per_layer, init_delta, delta_decay or moving_alpha")
        self.critic_learning_rate = check_number(critic_learning_rate, "critic_learning_rate",
                                                 low=0.0, meaning="the critic's Adam rate")
        self.warmup_episodes = check_int(warmup_episodes, "warmup_episodes",
                                         meaning="episodes of random actions")
        self.memory_per_layer = check_int(memory_per_layer, "memory_per_layer", minimum=1,
                                          meaning="replay transitions per group")
        self.moving_alpha = check_number(moving_alpha, "moving_alpha", low=0.0, high=1.0,
                                         meaning="the reward baseline's step")
        checked = TruncatedNormalNoise(init_delta, delta_decay, self.warmup_episodes)
        # None while SB3 loads a saved agent: then everything comes from the file
        steps = None if env is None else _episode_length(env, type(self).__name__)
        policy_kwargs = {"net_arch": list(AMC_NET_ARCH), **(policy_kwargs or {})}
        super().__init__(policy, env, learning_rate=learning_rate, batch_size=batch_size,
                         tau=tau, gamma=gamma, train_freq=train_freq,
                         gradient_steps=gradient_steps, policy_kwargs=policy_kwargs,
                         _init_setup_model=False, **kwargs)
        if steps is not None:
            self.episode_length = steps
            self.learning_starts = self.warmup_episodes * self.episode_length
            self.buffer_size = self.memory_per_layer * self.episode_length
            self.replay_buffer_class = EpisodeRewardBuffer
            self.replay_buffer_kwargs = {"moving_alpha": self.moving_alpha}
            low, high = float(self.action_space.low[0]), float(self.action_space.high[0])
            self.action_noise = TruncatedNormalNoise(checked.sigma, checked.decay,
                                                     self.warmup_episodes, low, high,
                                                     seed=self.seed)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        update_learning_rate(self.critic.optimizer, self.critic_learning_rate)

    def _update_learning_rate(self, optimizers) -> None:
        # SB3 gives every optimizer the one schedule; AMC's critic learns 10x faster (lr_c)
        super()._update_learning_rate(self.actor.optimizer)
        update_learning_rate(self.critic.optimizer, self.critic_learning_rate)
        self.logger.record("train/critic_learning_rate", self.critic_learning_rate)

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        noise = _truncated_noise(action_noise)
        if noise is None:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        if self.num_timesteps < learning_starts:  # warm-up: uniform actions, no noise
            return super()._sample_action(learning_starts, None, n_envs)
        mean, _ = self.predict(self._last_obs, deterministic=True)
        episode = self._episode_num  # finished episodes of all the envs: AMC's "episode"
        # one sampler for every env: SB3's per-env copies would repeat one random stream
        action = noise.sample(mean, episode)
        self.logger.record("rollout/exploration_width", noise.width(episode))
        return action, self.policy.scale_action(action)


def _episode_length(env, who: str) -> int:
    """Steps per episode (groups) of AMC's environment, or an error naming ``env``."""
    if isinstance(env, VecEnv):
        if all(env.env_is_wrapped(AMCObservation)):
            return int(env.get_attr("num_groups", [0])[0])
        what, mode = _first_attr(env, "env_id"), _first_attr(env, "constraint_mode")
    elif isinstance(env, gym.Env):
        if is_wrapped(env, AMCObservation):
            return int(env.unwrapped.num_groups)
        what = getattr(env.unwrapped, "env_id", "") or type(env.unwrapped).__name__
        mode = getattr(env.unwrapped, "constraint_mode", None)
    else:
        what, mode = repr(env), None
    raise InvalidArgumentError(
        f"env must be AMC's environment for {who}: LayerRatio-v0 with "
        "constraint_mode='project', wrapped by agents.amc.wrap_amc (or use "
        f"agents.train(preset='amc')); got {what}"
        + (f" (constraint_mode={mode!r})" if mode else "") + " without AMC's wrapper")


def _first_attr(venv: VecEnv, name: str):
    try:
        return venv.get_attr(name, [0])[0]
    except AttributeError:
        return None


class AMCDDPG(_AMC, DDPG):
    """AMC (He et al., ECCV 2018): SB3's DDPG with AMC's settings, on :func:`wrap_amc`'s env.

    The keyword arguments beyond DDPG's are AMC's, with its values as defaults:
    ``critic_learning_rate`` (``lr_c``; ``learning_rate`` is the actor's ``lr_a``),
    ``warmup_episodes``, ``memory_per_layer`` (replay transitions per group),
    ``init_delta``/``delta_decay`` (exploration) and ``moving_alpha`` (reward baseline).
    ``learning_starts``, ``buffer_size``, ``action_noise`` and the replay buffer follow from
    them and the env's number of groups.
    """


class AMCTD3(_AMC, TD3):
    """AMC's setup (see :class:`AMCDDPG`) on SB3's TD3: twin critics, delayed actor updates
    and target policy smoothing on top."""
