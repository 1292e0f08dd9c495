"""Agents for prune-gym: the baselines, and SB3 algorithms made to fit the environments."""

from __future__ import annotations

from agents.baselines import (
    BASELINES,
    BaselineResult,
    global_magnitude,
    random_search,
    run_baselines,
    uniform,
)
from agents.recurrent import RecurrentPPO

__all__ = ["BASELINES", "BaselineResult", "RecurrentPPO", "global_magnitude", "random_search",
           "run_baselines", "uniform"]
