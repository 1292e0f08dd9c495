"""``results.csv``, importable from here as before: it lives in :mod:`prune_gym.results`."""

from __future__ import annotations

from prune_gym.results import (
    COLUMNS,
    DEFAULT_TOLERANCE,
    OPTIONAL,
    RowCheck,
    append_results,
    as_row,
    mean_std,
    read_results,
    validate_results,
    write_results,
)

__all__ = ["COLUMNS", "DEFAULT_TOLERANCE", "OPTIONAL", "RowCheck", "append_results", "as_row",
           "mean_std", "read_results", "validate_results", "write_results"]
