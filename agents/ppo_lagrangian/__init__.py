"""PPO-Lagrangian and its maskable twin (sb3-contrib's layout: a folder per algorithm)."""

from __future__ import annotations

from agents.ppo_lagrangian.ppo_lagrangian import (
    LagrangianMixin,
    MaskablePPOLagrangian,
    PPOLagrangian,
)

__all__ = ["LagrangianMixin", "MaskablePPOLagrangian", "PPOLagrangian"]
