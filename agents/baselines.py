"""The baselines, importable from here as before: they live in :mod:`prune_gym.search`."""

from __future__ import annotations

from prune_gym.search import (
    BASELINES,
    BaselineResult,
    global_magnitude,
    largest_scale,
    random_search,
    run_baselines,
    uniform,
)

__all__ = ["BASELINES", "BaselineResult", "global_magnitude", "largest_scale", "random_search",
           "run_baselines", "uniform"]
