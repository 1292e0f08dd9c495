"""DNNGraph-v0: prune every group at once, repeatedly, reading the network as a graph
(GNN-RL's framing)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from prune_gym.arguments import check_int
from prune_gym.bisection import last_fitting
from prune_gym.envs.base import PruneEnv
from prune_gym.envs.layer_ratio import action_to_ratio, check_max_ratio, kept_after
from prune_gym.envs.problem import DEFAULT_TASK
from prune_gym.errors import InvalidArgumentError


class DNNGraphEnv(PruneEnv):
    """Prune a CNN by choosing a prune ratio for every channel group at once, step by step.

    ## Description
    The framing of GNN-RL (Yu et al., ICML 2022): the network is a graph, and one action
    prunes all of it. Each step prunes every prunable channel group (coupled channels found
    by dependency analysis) by its own fraction *of what remains*, in order of the
    ``importance`` criterion; the graph observation is rebuilt from the new state. The
    episode ends as soon as the pruned network meets the MACs/params budget, or after
    ``max_steps``. A constrained MDP: the reward scores the network, ``info["cost"]`` the
    budget violation.

    ## Action Space
    ``Box(-1, 1, (max_groups,), float32)``; ``max_groups`` defaults to ``G``, the number of
    prunable groups. Entry ``a_i`` (``i < G``) prunes the fraction ``(a_i + 1) / 2 *
    max_ratio`` of group ``i``'s remaining channels (rounded half up; a group always keeps at
    least one channel). Entries ``i >= G`` are padding (so that networks of different sizes
    share one space): they must lie in [-1, 1] like the rest and are otherwise ignored.

    ## Observation Space
    With ``obs_mode="padded"`` (default), a ``Dict`` of fixed-size arrays describing the network
    as a graph (nodes = layers and ops, edges = data flow): ``node_features``, ``edge_index``,
    ``edge_type``, ``node_mask``, ``edge_mask``, ``block`` (repeated motifs, for multi-stage
    GNNs), ``group`` (node -> prunable group, -1 for none: the action entry a node's output
    channels answer to) and ``globals`` (budget, remaining budget = budget - current metric
    ratio, step fraction ``step / max_steps``, current metric ratio; in [-1, 1]). With
    ``obs_mode="graph"``, a ``gymnasium.spaces.Graph``. ``prune_gym.to_pyg`` turns either into a
    PyG batch.

    ## Rewards
    0 on intermediate steps. When the episode ends (terminated or truncated) the network is
    evaluated and scored by ``reward``: ``"accuracy"`` (default), ``"acc_log_macs"``
    (``-(1 - accuracy) * log(MACs)``) or ``"self_competition"`` (accuracy minus the best
    feasible accuracy seen so far). The cost, ``max(0, metric / (budget * original) - 1)``,
    is paid on the last step (0 before): 0 on termination, the violation on truncation.
    ``info["signed_cost"]`` is the unclipped ``metric / limit - 1`` on the last step.

    ## Starting State
    The unpruned network. The dynamics are deterministic.

    ## Episode End
    Terminated when the constraint holds. Truncated after ``max_steps`` steps otherwise,
    with the violation as cost. With ``constraint_mode="project"`` the last step is projected
    onto the budget (every group shrunk by a common factor until the constraint holds), so
    episodes always terminate.

    ## Arguments
    - ``model``, ``val_data``, ``train_data``, ``example_inputs``, ``budget``,
      ``constraint``, ``latency_model``, ``constraint_mode``, ``reward``, ``importance``,
      evaluation options
      (``eval_samples``, ``eval_batch_size``, ``bn_recalibration``, ``finetune_steps``,
      ``finetune_lr``, ``finetune_batch_size``, ``evaluate``, ``eval_cache``), ``obs_mode``,
      ``render_mode`` (``"ansi"``), ``seed``, ``max_nodes``, ``max_edges``, ``max_groups``
      (also the action width), ``round_to``: as for ``LayerRatio-v0``. ``model`` defaults
      to the embedded ``"digits-cnn-v1"`` task, so ``gym.make("DNNGraph-v0")`` works as is.
    - ``max_steps``: steps before truncation (default 5).
    - ``max_ratio``: the largest fraction of a group's remaining channels one step prunes
      (default 0.8).

    All arguments are fixed for the life of the environment, so its spaces never change.

    ## Version History
    - v0: initial release. Before any release: the action width became ``max_groups``; the
      observation gained the ``group`` key; the constructor gained ``max_nodes``,
      ``max_edges`` and ``max_groups``; ``info`` gained ``signed_cost``; BatchNorm
      recalibration became the default where there is training data. The id was kept.
    """

    env_id = "DNNGraph-v0"

    def __init__(self, model=DEFAULT_TASK, *, max_steps: int = 5, max_ratio: float = 0.8,
                 **kwargs):
        self.max_steps = check_int(max_steps, "max_steps", minimum=1)
        self.max_ratio = check_max_ratio(max_ratio)
        super().__init__(model, **kwargs)

    def _make_action_space(self) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, shape=(self.max_groups,), dtype=np.float32)

    def _floor_counts(self) -> np.ndarray:
        if self.constraint_mode == "project":
            return np.ones(self.num_groups, dtype=np.int64)
        kept = self.sizes.copy()
        for _ in range(self.max_steps):
            kept = self._rounded(kept_after(kept, self.max_ratio))
        return kept

    def _start(self) -> None:
        self._k = self.sizes.copy()

    def _counts(self) -> np.ndarray:
        return self._k

    def _validate(self, action: np.ndarray) -> np.ndarray:
        if np.any(np.abs(action) > 1.0 + 1e-6):
            raise InvalidArgumentError(f"action has entries outside the action space [-1, 1]: "
                                       f"{action[np.abs(action) > 1.0 + 1e-6].tolist()}")
        return np.clip(action[: self.num_groups], -1.0, 1.0)  # the rest is padding

    def _step_fraction(self) -> float:
        return min(1.0, self._t / self.max_steps)

    def _project(self, kept: np.ndarray) -> np.ndarray:
        """Shrink every group by the largest common factor that meets the budget."""
        def shrunk(f: float) -> np.ndarray:
            return self._rounded(np.clip(np.floor(kept * f).astype(np.int64), 1, kept))

        # shrunk(0) is the floor (one channel per group, or round_to): checked reachable at
        # construction
        return shrunk(last_fitting(lambda f: self._fits(shrunk(f).tolist()), 0.0, 1.0,
                                   iters=30))

    def _apply(self, action: np.ndarray) -> tuple[bool, bool]:
        self._k = self._rounded(kept_after(self._k, action_to_ratio(action, self.max_ratio)))
        feasible = self._fits(self._k.tolist())
        last = self._t + 1 >= self.max_steps
        if not feasible and last and self.constraint_mode == "project":
            self._k = self._project(self._k)
            feasible = True
        return feasible, last and not feasible
