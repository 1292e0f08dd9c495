"""LayerRatio-v0: one prune ratio per channel group, in forward order (AMC's framing)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from prune_gym.arguments import check_number
from prune_gym.bisection import last_fitting
from prune_gym.envs.base import PruneEnv
from prune_gym.envs.problem import DEFAULT_TASK
from prune_gym.errors import InvalidArgumentError
from prune_gym.keep import round_counts


def check_max_ratio(max_ratio) -> float:
    """``max_ratio`` as a float in (0, 1], or an error naming it."""
    return check_number(max_ratio, "max_ratio", low=0.0, high=1.0,
                        meaning="the largest fraction of a group pruned by one action")


def action_to_ratio(action, max_ratio: float):
    """Map actions in [-1, 1] linearly onto prune ratios in [0, max_ratio]."""
    return (np.asarray(action, dtype=np.float64) + 1.0) * 0.5 * max_ratio


def kept_after(channels, ratio) -> np.ndarray:
    """Channels left after pruning ``ratio`` of ``channels`` (rounded half up, at least 1)."""
    channels = np.asarray(channels, dtype=np.int64)
    kept = np.floor(channels * (1.0 - np.asarray(ratio)) + 0.5).astype(np.int64)
    return np.clip(kept, 1, channels)


class LayerRatioEnv(PruneEnv):
    """Prune a CNN one channel group at a time by choosing each group's prune ratio.

    ## Description
    The sequential framing of AMC (He et al., ECCV 2018) and of Malik et al.'s
    constrained-RL pruning: the agent visits the network's prunable channel groups (sets of
    coupled channels, found by dependency analysis) in forward order and decides, for each,
    which fraction of its channels to remove. Channels are removed in order of the
    ``importance`` criterion. The network is evaluated once, when every group has been
    decided. The environment is a constrained MDP: the reward scores the pruned network and
    ``info["cost"]`` reports how far it exceeds the MACs/params budget.

    ## Action Space
    ``Box(-1, 1, (1,), float32)``. An action ``a`` prunes the fraction
    ``(a + 1) / 2 * max_ratio`` of the current group's channels: -1 keeps all of them, 1
    prunes ``max_ratio`` of them. The kept count is rounded half up and never below 1. With
    ``constraint_mode="project"`` the action is clipped (AMC's action wall) so that the budget
    stays reachable if every later group is pruned by ``max_ratio``.

    ## Observation Space
    With ``obs_mode="padded"`` (default), a ``Dict`` of fixed-size arrays describing the
    network as a graph (nodes = layers and ops, edges = data flow): ``node_features``,
    ``edge_index``, ``edge_type``, ``node_mask``, ``edge_mask``, ``block``, ``group`` (the
    index of the prunable group owning each node's output channels, -1 for none) and
    ``globals`` (budget, remaining budget = budget - current metric ratio, step fraction,
    current metric ratio; in [-1, 1]). Node features include each layer's kept fraction and
    which node is being decided. With ``obs_mode="graph"``, a ``gymnasium.spaces.Graph``. See
    :mod:`prune_gym.observations`; ``prune_gym.to_pyg`` turns either into a PyG batch.

    ## Rewards
    0 on every step but the last. On the last step, the pruned network is evaluated on the
    validation subset and scored by ``reward``: ``"accuracy"`` (top-1 in [0, 1]),
    ``"acc_log_macs"`` (AMC's ``-(1 - accuracy) * log(MACs)``) or ``"self_competition"``
    (accuracy minus the best feasible accuracy seen so far). The cost,
    ``max(0, metric / (budget * original metric) - 1)``, is paid on the last step too (0 on
    earlier steps); it is 0 exactly when the constraint holds. ``info["signed_cost"]`` is the
    same without the clip, ``metric / limit - 1`` (negative under budget): a signal a Lagrange
    multiplier can fall on as well as rise.

    ## Starting State
    The unpruned network; the first group to decide is the first in forward order. There is
    no randomness in the dynamics: ``reset(seed=...)`` only seeds ``np_random``.

    ## Episode End
    Terminated after one step per prunable group. Never truncated.

    ## Arguments
    - ``model``: an ``nn.Module`` (deep-copied, never modified), a zero-argument factory, a
      task name (default ``"digits-cnn-v1"``, which brings its own data and budget), or a
      :class:`~prune_gym.network.PrunableNetwork`.
    - ``val_data``: ``(x, y)`` tensors or a DataLoader of validation data held out of
      training (a task provides it). ``train_data``: training data for BatchNorm
      recalibration, fine-tuning and Taylor importance (a task provides it).
    - ``example_inputs``: one input batch for analysis and MAC counting (default: the first
      validation sample, batch 1).
    - ``budget``: fraction of the original metric to keep, in (0, 1] (default: the task's,
      else 0.5). ``constraint``: ``"macs"`` (default), ``"params"`` or ``"latency"`` (the
      CPU latency predicted by ``latency_model``, a :class:`~prune_gym.LatencyModel` fitted
      on this network with :func:`~prune_gym.fit_latency_model`, or the JSON file it was
      saved to; ``info["latency_ratio"]`` is then the predicted fraction of the original
      latency).
      ``constraint_mode``: ``"cmdp"`` (default) or ``"project"``.
    - ``max_ratio``: the largest fraction of a group one action prunes (default 0.8, AMC's).
    - ``reward``: ``"accuracy"`` (default), ``"acc_log_macs"``, ``"self_competition"``.
    - ``importance``: channel order, ``"l1"`` (default), ``"l2"``, ``"taylor"``,
      ``"bn_scale"``, ``"random"``.
    - ``eval_samples`` (validation subset size), ``eval_batch_size``, ``bn_recalibration``
      (batches of 64 training images to re-estimate BatchNorm on before each evaluation;
      default ``None``: 4 when there is training data, else 0. Without it a pruned network
      keeps the unpruned statistics and scores near chance, so the reward says little: see
      ``benchmarks/results/reward_signal.md``), ``finetune_steps``, ``finetune_lr``,
      ``finetune_batch_size`` (a short SGD fine-tune of a pruned copy before evaluation),
      ``evaluate`` (a callable ``fn(model) -> float`` replacing accuracy), ``eval_cache``.
    - ``obs_mode``: ``"padded"`` (default) or ``"graph"``. ``render_mode``: ``"ansi"``.
    - ``max_nodes``, ``max_edges``, ``max_groups``: pad the observation to this many nodes,
      edges and groups (default: exactly this network's), so that several networks share one
      observation space and one policy can act on all of them; padding is masked.
    - ``round_to``: round every kept count half up to a multiple of this (groups left whole
      or smaller than it excepted), so that the pruned layers keep whole SIMD vectors and
      run as fast as their MACs say; the budget is checked on the rounded counts. Default:
      no rounding.
    - ``seed``: seeds the first ``reset()``, the ``random`` criterion and fine-tuning.

    All arguments are fixed for the life of the environment, so its spaces never change.

    ## Version History
    - v0: initial release. Before any release, the observation gained the ``group`` key and
      the constructor ``max_nodes``/``max_edges``/``max_groups``, ``info`` gained
      ``signed_cost``, and BatchNorm recalibration became the default where there is
      training data; the id was kept.
    """

    env_id = "LayerRatio-v0"

    def __init__(self, model=DEFAULT_TASK, *, max_ratio: float = 0.8, **kwargs):
        self.max_ratio = check_max_ratio(max_ratio)
        super().__init__(model, **kwargs)

    def _make_action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def _floor_counts(self) -> np.ndarray:
        return self._rounded(kept_after(self.sizes, self.max_ratio))

    def _round_one(self, t: int, count: int) -> int:
        if self.round_to is None:  # on every step and in the wall's bisection
            return count
        return int(round_counts([count], self.sizes[t:t + 1], self.round_to)[0])

    def _start(self) -> None:
        self._k = self.sizes.copy()

    def _counts(self) -> np.ndarray:
        return self._k

    def _validate(self, action: np.ndarray) -> np.ndarray:
        if not -1.0 - 1e-6 <= float(action[0]) <= 1.0 + 1e-6:
            raise InvalidArgumentError(f"action {action.tolist()} is outside the action space "
                                       "[-1, 1]")
        return np.clip(action, -1.0, 1.0)

    def _current_group(self) -> int:
        return self._t if self._t < self.num_groups else -1

    def _step_fraction(self) -> float:
        return self._t / self.num_groups

    def _wall(self, t: int, wanted: int) -> int:
        """The largest count <= ``wanted`` for group ``t`` that keeps the budget reachable."""
        trial = self._k.copy()
        trial[t + 1:] = self._floor_counts()[t + 1:]

        def fits(count: int) -> bool:
            trial[t] = self._round_one(t, count)
            return self._fits(trial.tolist())

        lowest = int(kept_after(self.sizes[t], self.max_ratio))
        return self._round_one(t, last_fitting(fits, lowest, int(wanted)))

    def _apply(self, action: np.ndarray) -> tuple[bool, bool]:
        t = self._t
        kept = int(kept_after(self.sizes[t], action_to_ratio(action[0], self.max_ratio)))
        kept = self._round_one(t, kept)
        if self.constraint_mode == "project":
            kept = self._wall(t, kept)
        self._k[t] = kept
        return t + 1 == self.num_groups, False
