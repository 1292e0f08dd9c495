"""ChannelMask-v0: keep or prune every channel of one group per step (Balemans et al.)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from prune_gym.arguments import check_size
from prune_gym.bisection import last_fitting
from prune_gym.envs.base import PruneEnv
from prune_gym.envs.channel_features import CHANNEL_FEATURES, padded_channel_features
from prune_gym.envs.problem import DEFAULT_TASK
from prune_gym.errors import InvalidArgumentError


class ChannelMaskEnv(PruneEnv):
    """Prune a CNN by choosing, group by group, exactly which channels to keep.

    ## Description
    The framing of Balemans et al. (2025): binary keep/prune decisions per channel, read
    from a graph of the network and the current group's channels, under a constrained MDP.
    The agent visits the prunable channel groups (coupled channels found by dependency
    analysis) in forward order; each step decides every channel of the current group. A
    group can never be emptied: if an action keeps none of the group's channels, its most
    important channel (under ``importance``) is kept. The network is evaluated once, after
    the last group.

    ## Action Space
    ``MultiBinary(S)``, ``S`` = ``max_channels`` (default: the largest group size): bit ``j`` =
    1 keeps channel ``j`` of the current group, 0 prunes it. Bits beyond the current group's
    size are padding and ignored. ``action_masks()`` (for sb3-contrib's MaskablePPO, also under
    ``SubprocVecEnv``) returns ``2 * S`` booleans, one ``(can be 0, can be 1)`` pair per bit:
    padded bits are pinned to 0, real bits are free. Non-emptiness cannot be expressed by a
    per-bit mask without pinning a channel, so it is enforced in ``step`` as above. With
    ``constraint_mode="project"`` the kept channels of a group are cut, least important first,
    until the budget stays reachable with one channel in every later group.

    ## Observation Space
    With ``obs_mode="padded"`` (default), a ``Dict``: the network graph (``node_features``,
    ``edge_index``, ``edge_type``, ``node_mask``, ``edge_mask``, ``block``, ``globals``; see
    ``LayerRatio-v0``) plus ``channel_features``, ``Box(0, 1, (S, 4), float32)``: for each
    channel of the current group its L1 and L2 weight norms and BatchNorm scale (each divided
    by the group's maximum) and its position ``j / (size - 1)``, computed once from the
    unpruned weights; and ``channel_mask``, ``Box(0, 1, (S,), int8)``, 1 for real channels.
    Both are zero after the last group. With ``obs_mode="graph"``, a ``Dict`` of
    ``graph`` (``gymnasium.spaces.Graph``) and the two channel arrays.

    ## Rewards
    0 on every step but the last. On the last step the network is evaluated and scored by
    ``reward``: ``"accuracy"`` (default), ``"acc_log_macs"`` or ``"self_competition"``
    (accuracy minus the best feasible accuracy seen so far, as in Balemans et al.). The cost
    ``max(0, metric / (budget * original) - 1)`` is paid on the last step (0 before).

    ## Starting State
    The unpruned network, at the first group. The dynamics are deterministic.

    ## Episode End
    Terminated after one step per prunable group. Never truncated.

    ## Arguments
    - ``model``, ``val_data``, ``train_data``, ``example_inputs``, ``budget``,
      ``constraint``, ``latency_model``, ``constraint_mode``, ``reward``, evaluation options
      (``eval_samples``, ``eval_batch_size``, ``bn_recalibration``, ``finetune_steps``,
      ``finetune_lr``, ``finetune_batch_size``, ``evaluate``, ``eval_cache``), ``obs_mode``,
      ``render_mode`` (``"ansi"``), ``seed``: as for ``LayerRatio-v0``.
    - ``importance``: decides which channel is kept when an action would empty a group, and
      the cut order of ``"project"`` mode (default ``"l1"``).
    - ``max_nodes``, ``max_edges``, ``max_groups``: as for ``LayerRatio-v0``.
      ``max_channels``: the action and channel-array width ``S`` (default: the largest group
      size); networks given the same ``max_*`` share one observation and action space.
    - ``round_to`` is refused: channels are chosen one by one, so there is no count to round.

    All arguments are fixed for the life of the environment, so its spaces never change.

    ## Version History
    - v0: initial release. Before any release: the observation gained the ``group`` key;
      the constructor gained ``max_nodes``, ``max_edges``, ``max_groups`` and
      ``max_channels``; ``info`` gained ``signed_cost``; BatchNorm recalibration became the
      default where there is training data. The id was kept.
    """

    env_id = "ChannelMask-v0"

    rounds_counts = False

    def __init__(self, model=DEFAULT_TASK, *, max_channels: int | None = None, **kwargs):
        self._max_channels = max_channels  # checked once the group sizes are known
        super().__init__(model, **kwargs)

    def _extra_spaces(self) -> dict[str, spaces.Box]:
        largest = int(self.sizes.max())
        self.max_size = check_size(self._max_channels, "max_channels", largest,
                                   "channels in its largest group")
        self.max_channels = self.max_size
        self._channel_table, self._channel_valid = padded_channel_features(self.net,
                                                                           self.max_size)
        return {
            "channel_features": spaces.Box(0.0, 1.0, (self.max_size, len(CHANNEL_FEATURES)),
                                           dtype=np.float32),
            "channel_mask": spaces.Box(0, 1, (self.max_size,), dtype=np.int8),
        }

    def _extras(self) -> dict[str, np.ndarray]:
        t = self._t
        if t < self.num_groups:
            return {"channel_features": self._channel_table[t].copy(),
                    "channel_mask": self._channel_valid[t].copy()}
        return {"channel_features": np.zeros_like(self._channel_table[0]),
                "channel_mask": np.zeros_like(self._channel_valid[0])}

    def _make_action_space(self) -> spaces.MultiBinary:
        return spaces.MultiBinary(self.max_size)

    def _start(self) -> None:
        self._masks = [np.ones(int(s), dtype=bool) for s in self.sizes]
        self._k = self.sizes.copy()

    def _counts(self) -> np.ndarray:
        return self._k

    def _keep_arg(self) -> list[np.ndarray]:
        return self._masks

    def _current_group(self) -> int:
        return self._t if self._t < self.num_groups else -1

    def _step_fraction(self) -> float:
        return self._t / self.num_groups

    def _validate(self, action: np.ndarray) -> np.ndarray:
        bits = action.astype(np.float64, copy=False)
        if not np.all((bits == 0) | (bits == 1)):
            raise InvalidArgumentError(f"action must hold only 0 and 1 (MultiBinary("
                                       f"{self.max_size})); got values "
                                       f"{np.unique(action[(bits != 0) & (bits != 1)]).tolist()}")
        return action

    def action_masks(self) -> np.ndarray:
        """``(2 * S,)`` booleans: a ``(can be 0, can be 1)`` pair per bit (sb3-contrib's
        MultiBinary format); padded bits may only be 0."""
        size = int(self.sizes[self._t]) if self._started and self._t < self.num_groups else 0
        masks = np.ones((self.max_size, 2), dtype=bool)
        masks[size:, 1] = False
        return masks.reshape(-1)

    def _cut(self, t: int, kept: np.ndarray) -> np.ndarray:
        """Drop the least important kept channels of group ``t`` until the budget stays
        reachable with one channel in every later group."""
        order = self.net.ranking(t, self.importance)
        chosen = order[kept[order]]  # kept channels, most important first
        trial: list = list(self._masks[:t]) + [kept] + [1] * (self.num_groups - t - 1)
        if self._fits(trial):
            return kept

        def prefix(count: int) -> np.ndarray:
            mask = np.zeros_like(kept)
            mask[chosen[:count]] = True
            return mask

        def fits(count: int) -> bool:
            trial[t] = prefix(count)
            return self._fits(trial)

        return prefix(last_fitting(fits, 1, len(chosen) - 1))

    def _apply(self, action: np.ndarray) -> tuple[bool, bool]:
        t = self._t
        kept = action[: self.sizes[t]].astype(bool)
        if not kept.any():  # a group is never emptied: keep its most important channel
            kept[self.net.ranking(t, self.importance)[0]] = True
        if self.constraint_mode == "project":
            kept = self._cut(t, kept)
        self._masks[t] = kept
        self._k[t] = int(kept.sum())
        return t + 1 == self.num_groups, False
