"""PPO-Lagrangian: SB3's PPO (and sb3-contrib's MaskablePPO) on a constrained MDP.

What it adds to PPO, following OmniSafe's PPOLag (facts from its code, our implementation):

- a cost critic: a head like ``value_net``, on the same critic latent, added to whatever
  ``ActorCriticPolicy`` the user passes (``"MlpPolicy"``, ``"MultiInputPolicy"``, a graph
  policy), trained with the value loss (``cost_vf_coef``) on cost TD(lambda) returns;
- cost GAE (``cost_gae_lambda``) over the per-step cost ``info[cost_key]``;
- the policy loss on ``(A_r - lambda * A_c) / (1 + lambda)``, ``A_r`` standardised over the
  rollout and ``A_c`` only centred;
- ``lambda`` (:class:`agents.common.lagrangian.Lagrangian`, rules ``"gradient"`` and
  ``"pid"``) updated once per rollout, after it and before the policy update, from the mean
  cost of the *episodes that ended in it* (not the per-step mean); no episode, no update.
  ``lambda`` and its rule's state are saved and loaded with the model.

The overrides are ``_setup_model`` (cost buffer, cost head from
:mod:`agents.ppo_lagrangian.cost_critic`, multiplier), ``collect_rollouts``
(SB3's, then the cost values in one batched pass and cost GAE), ``_update_info_buffer``
(where SB3 hands over each step's ``infos``: the costs are read there, so SB3's and
sb3-contrib's rollout loops are used unchanged) and ``train``. ``train`` is ours because the
cost-value loss must join PPO's loss in the same backward pass and SB3's ``train`` has no
hook for an extra loss term; it keeps SB3's clipping, value clipping, KL early stop and log
keys.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.utils import explained_variance, obs_as_tensor, safe_mean
from torch.nn import functional as F

from agents.common.buffers import (
    CostBufferMixin,
    CostDictRolloutBuffer,
    CostRolloutBuffer,
    MaskableCostDictRolloutBuffer,
    MaskableCostRolloutBuffer,
)
from agents.common.lagrangian import Lagrangian, costs_from_infos
from agents.common.policies import GraphPolicy, MaskableGraphPolicy
from agents.ppo_lagrangian.cost_critic import (
    add_cost_head,
    cost_values,
    critic_latent,
    lagrangian_advantage,
)
from prune_gym.arguments import check_number
from prune_gym.errors import InvalidArgumentError


@dataclass
class _RolloutCosts:
    """What one rollout's steps tell about cost (never saved)."""

    buffer: CostBufferMixin
    finished: list[float] = field(default_factory=list)  # costs of episodes ended in it
    truncated: list[tuple[int, int, Any]] = field(default_factory=list)  # (pos, env, obs)


class LagrangianMixin:
    """The Lagrangian part of :class:`PPOLagrangian` and :class:`MaskablePPOLagrangian`
    (first base; the second is SB3's ``PPO`` or sb3-contrib's ``MaskablePPO``). It takes
    the base algorithm's arguments and these:

    Args:
        cost_limit: the limit ``d`` on the mean episode cost (>= 0).
        cost_key: the ``info`` key of the per-step cost. prune-gym's envs report ``"cost"``
            (``max(0, metric / limit - 1)`` at the end of an episode, 0 before) and
            ``"signed_cost"`` (the same without the ``max``); use ``"signed_cost"`` with
            ``cost_limit=0`` for a ``lambda`` that falls when the network ends under budget.
        lagrangian: the multiplier's rule, ``"gradient"`` or ``"pid"``.
        lagrangian_kwargs: the multiplier's other arguments (``lambda_init``, ``lambda_max``,
            ``lr``, ``optimizer``, ``kp``, ``ki``, ``kd``, ``ema``, ``delay``; see
            :class:`agents.common.lagrangian.Lagrangian`).
        cost_gae_lambda: GAE's lambda for the cost (OmniSafe: 0.95).
        cost_vf_coef: weight of the cost-value loss.
        normalize_cost_advantage: also scale ``A_c`` to unit variance over the rollout (as
            FSRL does), not only centre it (OmniSafe, the default). Measured on
            ``LayerRatio-v0``: with the default a policy whose actions saturate the action
            bounds gives rollouts with almost no reward variance, which standardisation
            inflates, and no ``lambda`` reached in 8k steps brings it back; with this on,
            ``lambda`` near 1 balances reward and cost whatever their scales.
    """

    # set by the base algorithm
    policy: ActorCriticPolicy
    rollout_buffer: CostBufferMixin
    _cost_buffer_classes: tuple[type, type]  # (flat observations, Dict observations)

    def __init__(self, policy: Any, env: Any, *args: Any, cost_limit: float = 0.0,
                 cost_key: str = "cost", lagrangian: str = "gradient",
                 lagrangian_kwargs: dict[str, Any] | None = None,
                 cost_gae_lambda: float = 0.95, cost_vf_coef: float = 0.5,
                 normalize_cost_advantage: bool = False, **kwargs: Any):
        if not isinstance(cost_key, str) or not cost_key:
            raise InvalidArgumentError(f"cost_key must be a non-empty str (the info key of the "
                                       f"per-step cost); got {cost_key!r}")
        if lagrangian_kwargs is not None and not isinstance(lagrangian_kwargs, dict):
            raise InvalidArgumentError(f"lagrangian_kwargs must be a dict or None; got "
                                       f"{type(lagrangian_kwargs).__name__}")
        self.cost_limit = cost_limit
        self.cost_key = cost_key
        self.lagrangian = lagrangian
        self.lagrangian_kwargs = dict(lagrangian_kwargs or {})  # a copy: never the user's
        self.cost_gae_lambda = check_number(cost_gae_lambda, "cost_gae_lambda", low=0.0,
                                            low_open=False, high=1.0)
        self.cost_vf_coef = check_number(cost_vf_coef, "cost_vf_coef", low=0.0, low_open=False)
        if not isinstance(normalize_cost_advantage, (bool, np.bool_)):
            raise InvalidArgumentError(f"normalize_cost_advantage must be True or False; got "
                                       f"{normalize_cost_advantage!r}")
        self.normalize_cost_advantage = bool(normalize_cost_advantage)
        self.lagrange = self._make_lagrange()  # checks the multiplier's arguments now
        self.cost_limit = self.lagrange.cost_limit
        self.ep_cost_buffer: deque[float] | None = None
        self._episode_costs: np.ndarray | None = None
        self._cost_rollout: _RolloutCosts | None = None
        super().__init__(policy, env, *args, **kwargs)

    def _make_lagrange(self) -> Lagrangian:
        return Lagrangian(self.cost_limit, self.lagrangian, **self.lagrangian_kwargs)

    @property
    def lagrange_multiplier(self) -> float:
        """The current Lagrange multiplier ``lambda``."""
        return self.lagrange.value

    # -- set-up, saving -------------------------------------------------------------------
    def _setup_model(self) -> None:
        flat, dict_obs = self._cost_buffer_classes
        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = dict_obs if is_dict else flat
        elif not issubclass(self.rollout_buffer_class, CostBufferMixin):
            raise InvalidArgumentError(
                f"rollout_buffer_class={self.rollout_buffer_class.__name__} stores no costs; "
                f"use {flat.__name__} or {dict_obs.__name__} from agents.common.buffers, or a "
                "subclass of agents.common.buffers.CostBufferMixin")
        self.rollout_buffer_kwargs = {**self.rollout_buffer_kwargs,
                                      "cost_gae_lambda": self.cost_gae_lambda}
        super()._setup_model()  # type: ignore[misc]
        add_cost_head(self.policy, self.lr_schedule(1), type(self).__name__)
        # built from the (possibly loaded) configuration; a loaded model's state is put in
        # after this by SB3's set_parameters
        self.lagrange = self._make_lagrange()
        self.cost_limit = self.lagrange.cost_limit

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()  # type: ignore[misc]
        return [*state_dicts, "lagrange"], variables

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_episode_costs",  # type: ignore[misc]
                "_cost_rollout"]

    def _setup_learn(self, total_timesteps: int, callback: Any = None,
                     reset_num_timesteps: bool = True, *args: Any, **kwargs: Any) -> Any:
        env_reset = reset_num_timesteps or self._last_obs is None  # as SB3 decides
        out = super()._setup_learn(total_timesteps, callback,  # type: ignore[misc]
                                   reset_num_timesteps, *args, **kwargs)
        if env_reset or self._episode_costs is None:
            self._episode_costs = np.zeros(self.n_envs)
        if reset_num_timesteps or self.ep_cost_buffer is None:
            self.ep_cost_buffer = deque(maxlen=self._stats_window_size)
        return out

    # -- rollouts ------------------------------------------------------------------------
    def collect_rollouts(self, env: Any, callback: Any, rollout_buffer: Any,
                         n_rollout_steps: int, *args: Any, **kwargs: Any) -> bool:
        self._cost_rollout = _RolloutCosts(rollout_buffer)
        try:
            complete = super().collect_rollouts(env, callback, rollout_buffer,  # type: ignore[misc]
                                                n_rollout_steps, *args, **kwargs)
            if complete:
                self._cost_advantages(rollout_buffer, self._cost_rollout)
                self._update_lagrange(self._cost_rollout.finished)
        finally:
            self._cost_rollout = None
        return complete

    def _update_info_buffer(self, infos: list[dict[str, Any]],
                            dones: np.ndarray | None = None) -> None:
        """SB3 calls this once per step of a rollout, before it adds the step to the buffer:
        the place to read the step's costs without rewriting SB3's rollout loop."""
        super()._update_info_buffer(infos, dones)  # type: ignore[misc]
        rollout = self._cost_rollout
        if rollout is None:  # not inside our collect_rollouts
            return
        costs = costs_from_infos(infos, self.cost_key)
        buffer = rollout.buffer
        buffer.costs[buffer.pos] = costs
        self._episode_costs += costs
        for i in np.flatnonzero(dones if dones is not None else []):
            rollout.finished.append(float(self._episode_costs[i]))
            self.ep_cost_buffer.append(float(self._episode_costs[i]))
            self._episode_costs[i] = 0.0
            if infos[i].get("terminal_observation") is not None and \
                    infos[i].get("TimeLimit.truncated", False):
                rollout.truncated.append((buffer.pos, i,
                                          infos[i]["terminal_observation"]))

    def _cost_values(self, obs: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        """Cost values of a batch of observations, on the policy's critic path."""
        return cost_values(self.policy, obs)

    def _cost_advantages(self, buffer: CostBufferMixin, rollout: _RolloutCosts) -> None:
        """Cost values of the whole rollout in batches (the parameters are those that acted),
        bootstrap of time-limit truncations (as SB3 does for the reward), then cost GAE."""
        n_steps, n_envs = buffer.costs.shape
        observations = buffer.observations
        flat = ({k: v.reshape(n_steps * n_envs, *v.shape[2:]) for k, v in observations.items()}
                if isinstance(observations, dict) else
                observations.reshape(n_steps * n_envs, *observations.shape[2:]))
        chunk = max(self.batch_size, 1)
        values = []
        with th.no_grad():
            for start in range(0, n_steps * n_envs, chunk):
                part = ({k: v[start:start + chunk] for k, v in flat.items()}
                        if isinstance(flat, dict) else flat[start:start + chunk])
                values.append(self._cost_values(obs_as_tensor(part, self.device)).cpu().numpy())
            buffer.cost_values[:] = np.concatenate(values).reshape(n_steps, n_envs)
            for pos, i, terminal_obs in rollout.truncated:
                terminal = self.policy.obs_to_tensor(terminal_obs)[0]
                buffer.costs[pos, i] += self.gamma * float(self._cost_values(terminal)[0])
            last = self._cost_values(obs_as_tensor(self._last_obs, self.device)).cpu().numpy()
        buffer.compute_cost_returns_and_advantage(last, np.asarray(self._last_episode_starts))
        if self.ep_cost_buffer:
            self.logger.record("rollout/ep_cost_mean", safe_mean(list(self.ep_cost_buffer)))

    def _update_lagrange(self, episode_costs: list[float]) -> None:
        """Once per rollout, from the mean cost of the episodes that ended in it."""
        if episode_costs:
            mean_cost = float(np.mean(episode_costs))
            self.lagrange.update(mean_cost)
            self.logger.record("train/lagrange_ep_cost", mean_cost)
        self.logger.record("train/lagrange_multiplier", self.lagrange.value)

    # -- the update ----------------------------------------------------------------------
    def train(self) -> None:
        """PPO's clipped update on the combined advantage, with the cost-value loss."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        clip_range = self.clip_range(progress)
        clip_range_vf = self.clip_range_vf(progress) if self.clip_range_vf is not None else None
        lam = self.lagrange.value
        buffer = self.rollout_buffer
        # statistics over the whole rollout (OmniSafe), not per minibatch
        reward_mean = float(np.mean(buffer.advantages))
        reward_std = float(np.std(buffer.advantages, ddof=1)) if buffer.advantages.size > 1 \
            else 1.0  # ddof=1 as torch's std, which SB3 uses per minibatch
        cost_mean = float(np.mean(buffer.cost_advantages))
        cost_std = float(np.std(buffer.cost_advantages, ddof=1)) \
            if self.normalize_cost_advantage and buffer.cost_advantages.size > 1 else None

        logs: dict[str, list[float]] = {k: [] for k in (
            "entropy_loss", "policy_gradient_loss", "value_loss", "cost_value_loss",
            "clip_fraction")}
        approx_kl_divs: list[float] = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for data in buffer.get(self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                masks = ({"action_masks": data.action_masks} if hasattr(data, "action_masks")
                         else {})
                with critic_latent(self.policy) as latent:
                    values, log_prob, entropy = self.policy.evaluate_actions(
                        data.observations, actions, **masks)
                values = values.flatten()
                cost_values = self.policy.cost_value_net(latent.value).flatten()

                advantages = lagrangian_advantage(
                    data.advantages, data.cost_advantages, lam, reward_mean=reward_mean,
                    reward_std=reward_std if self.normalize_advantage else None,
                    cost_mean=cost_mean, cost_std=cost_std)

                ratio = th.exp(log_prob - data.old_log_prob)
                policy_loss = -th.min(advantages * ratio,
                                      advantages * th.clamp(ratio, 1 - clip_range,
                                                            1 + clip_range)).mean()
                if clip_range_vf is not None:
                    values = data.old_values + th.clamp(values - data.old_values,
                                                        -clip_range_vf, clip_range_vf)
                    cost_values = data.old_cost_values + th.clamp(
                        cost_values - data.old_cost_values, -clip_range_vf, clip_range_vf)
                value_loss = F.mse_loss(data.returns, values)
                cost_value_loss = F.mse_loss(data.cost_returns, cost_values)
                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                loss = (policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                        + self.cost_vf_coef * cost_value_loss)

                logs["policy_gradient_loss"].append(policy_loss.item())
                logs["value_loss"].append(value_loss.item())
                logs["cost_value_loss"].append(cost_value_loss.item())
                logs["entropy_loss"].append(entropy_loss.item())
                logs["clip_fraction"].append(
                    th.mean((th.abs(ratio - 1) > clip_range).float()).item())
                with th.no_grad():  # SB3's estimate of the KL divergence, for early stopping
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl = th.mean((th.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl)
                if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: "
                              f"{approx_kl:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        for key, values_logged in logs.items():
            self.logger.record(f"train/{key}", safe_mean(values_logged))
        self.logger.record("train/approx_kl", safe_mean(approx_kl_divs))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_variance(
            buffer.values.flatten(), buffer.returns.flatten()))
        self.logger.record("train/cost_explained_variance", explained_variance(
            buffer.cost_values.flatten(), buffer.cost_returns.flatten()))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)


class PPOLagrangian(LagrangianMixin, PPO):
    """SB3's PPO with a cost critic, cost GAE and a learned Lagrange multiplier.

    Takes every argument of ``stable_baselines3.PPO`` and those of :class:`LagrangianMixin`
    (``cost_limit``, ``cost_key``, ``lagrangian``, ``lagrangian_kwargs``,
    ``cost_gae_lambda``, ``cost_vf_coef``, ``normalize_cost_advantage``).
    ``model.lagrange_multiplier`` is ``lambda``.
    Logs, besides PPO's keys, ``rollout/ep_cost_mean`` (over the last ``stats_window_size``
    episodes, like ``ep_rew_mean``), ``train/lagrange_multiplier`` (after the rollout's
    update), ``train/lagrange_ep_cost`` (the mean episode cost that update used),
    ``train/cost_value_loss`` and ``train/cost_explained_variance``. ``clip_range_vf``, when
    set, clips the cost values as it clips the values.

    Example:
        >>> model = PPOLagrangian("MultiInputPolicy", gym.make("LayerRatio-v0"),
        ...                       cost_key="signed_cost", cost_limit=0.0, lagrangian="pid")
        >>> model.learn(10_000)
    """

    _cost_buffer_classes = (CostRolloutBuffer, CostDictRolloutBuffer)
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**PPO.policy_aliases,
                                                             "GraphPolicy": GraphPolicy}


class MaskablePPOLagrangian(LagrangianMixin, MaskablePPO):
    """sb3-contrib's MaskablePPO (action masks, e.g. ``ChannelMask-v0``) made Lagrangian,
    exactly as :class:`PPOLagrangian`. ``"GraphPolicy"`` is
    :class:`~agents.common.policies.MaskableGraphPolicy`, which honours the masks."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        **MaskablePPO.policy_aliases, "GraphPolicy": MaskableGraphPolicy}

    _cost_buffer_classes = (MaskableCostRolloutBuffer, MaskableCostDictRolloutBuffer)
