"""RL-Pruner: a non-gradient agent that learns how to spread each pruning step's channel
quota over the network's groups (Wang & Kindratenko, 2024; github Beryex/RLPruner-CNN)."""

from __future__ import annotations

from agents.rl_pruner.config import REWARDS, RLPrunerConfig
from agents.rl_pruner.distribution import mean_distribution, renormalise, sample, update
from agents.rl_pruner.rl_pruner import RLPruner
from agents.rl_pruner.schedules import EXPLORE_STRATEGIES, epsilon, planned_steps, split_quota

__all__ = ["EXPLORE_STRATEGIES", "REWARDS", "RLPruner", "RLPrunerConfig", "epsilon",
           "mean_distribution", "planned_steps", "renormalise", "sample", "split_quota",
           "update"]
