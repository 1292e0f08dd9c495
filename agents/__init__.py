"""Agents for prune-gym: baselines now; SB3 feature extractors and algorithms build on them."""

from __future__ import annotations

from agents.baselines import (
    BASELINES,
    BaselineResult,
    global_magnitude,
    random_search,
    run_baselines,
    uniform,
)

__all__ = ["BASELINES", "BaselineResult", "global_magnitude", "random_search", "run_baselines",
           "uniform"]
