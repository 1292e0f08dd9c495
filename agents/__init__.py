"""Agents for prune-gym, laid out like sb3-contrib: a folder per algorithm, shared parts in
``agents.common``, and the baselines every result is compared against.

The public names:

- graph feature extractors for any SB3 policy: :class:`GATExtractor`,
  :class:`MultiStageGNNExtractor`;
- :class:`GraphPolicy` (per-node heads: one policy for networks of any size; importing
  ``agents`` makes ``PPO("GraphPolicy", env)`` work);
- constrained PPO: :class:`PPOLagrangian`, :class:`MaskablePPOLagrangian`, and
  :class:`LagrangianRewardWrapper` for every other SB3 algorithm;
- :func:`train` (run directories, presets, resume) and the baselines.
"""

from __future__ import annotations

from agents.baselines import (
    BASELINES,
    BaselineResult,
    global_magnitude,
    random_search,
    run_baselines,
    uniform,
)
from agents.common.lagrangian import Lagrangian
from agents.common.policies import GraphPolicy
from agents.common.torch_layers import GATExtractor, MultiStageGNNExtractor
from agents.common.vec_env import LagrangianRewardWrapper
from agents.ppo_lagrangian import MaskablePPOLagrangian, PPOLagrangian
from agents.recurrent import RecurrentPPO
from agents.train import PRESETS, train

__all__ = ["BASELINES", "PRESETS", "BaselineResult", "GATExtractor", "GraphPolicy",
           "Lagrangian", "LagrangianRewardWrapper", "MaskablePPOLagrangian",
           "MultiStageGNNExtractor", "PPOLagrangian", "RecurrentPPO", "global_magnitude",
           "random_search", "run_baselines", "train", "uniform"]
