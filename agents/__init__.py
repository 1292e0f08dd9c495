"""Agents for prune-gym, laid out like sb3-contrib: a folder per algorithm, shared parts in
``agents.common``, and the baselines every result is compared against.

The public names:

- graph feature extractors for any SB3 policy: :class:`GATExtractor`,
  :class:`MultiStageGNNExtractor`;
- :class:`GraphPolicy` (per-node heads: one policy for networks of any size;
  ``"GraphPolicy"`` by name with :class:`PPOLagrangian` and, honouring action masks, with
  :class:`MaskablePPOLagrangian`; ``PPO(GraphPolicy, env)`` with SB3's own);
- constrained PPO: :class:`PPOLagrangian`, :class:`MaskablePPOLagrangian`, and
  :class:`LagrangianRewardWrapper` for every other SB3 algorithm;
- :func:`train` (run directories, presets, resume) and the baselines;
- the agents that are not one SB3 algorithm: :class:`RLPruner`, and AMC's pieces around
  SB3's DDPG and TD3 (:class:`AMCDDPG`, :class:`AMCTD3`, :func:`wrap_amc`);
- :func:`run_method` and :data:`METHODS`: every method by name at one budget of
  evaluations (what ``prune-gym search`` and the benchmarks run).
"""

from __future__ import annotations

from agents.amc import AMCDDPG, AMCTD3, check_amc_env, wrap_amc
from agents.common.lagrangian import Lagrangian
from agents.common.policies import GraphPolicy
from agents.common.torch_layers import GATExtractor, MultiStageGNNExtractor
from agents.common.vec_env import LagrangianRewardWrapper
from agents.methods import METHODS, run_method
from agents.ppo_lagrangian import MaskablePPOLagrangian, PPOLagrangian
from agents.recurrent import RecurrentPPO
from agents.rl_pruner import RLPruner
from agents.train import PRESETS, train
from prune_gym.search import (
    BASELINES,
    BaselineResult,
    global_magnitude,
    random_search,
    run_baselines,
    uniform,
)

__all__ = ["AMCDDPG", "AMCTD3", "BASELINES", "METHODS", "PRESETS", "BaselineResult",
           "GATExtractor", "GraphPolicy", "Lagrangian", "LagrangianRewardWrapper",
           "MaskablePPOLagrangian", "MultiStageGNNExtractor", "PPOLagrangian", "RLPruner",
           "RecurrentPPO", "check_amc_env", "global_magnitude", "random_search",
           "run_baselines", "run_method", "train", "uniform", "wrap_amc"]
