"""``results.csv``: one row per pruning result, in one schema for every producer.

A search run, the benchmark and the leaderboard all write and read their results through
this module, so a row from any of them can be compared with, and replayed like, any other.
A row records what was found (the keep state: channels kept per group, chosen by
``importance``) and how it was scored (``val_samples``, ``bn_recalibration``), which is
everything needed to rebuild the task's network and evaluator and recompute it:
:func:`validate_results` does that, in the spirit of CompilerGym's result validation. A
reported number that does not come back on replay is flagged rather than trusted.

Columns (:data:`COLUMNS`; empty cells mean "not measured" and are allowed only in
:data:`OPTIONAL`)::

    task, env_id, method, seed, budget, constraint, importance, val_samples,
    bn_recalibration, keep (JSON list: per group, the count of kept channels or the list of
    their indices), macs, params, macs_ratio,
    params_ratio, feasible (1/0), val_accuracy, test_accuracy, finetune_steps,
    finetuned_val_accuracy, finetuned_test_accuracy, evaluations, wall_time_s,
    prune_gym_version

Floats are written with ``repr``, so they read back bit for bit. Columns beyond the schema
are kept as text on reading and written back after the schema's, so a newer file passes
through an older reader without losing anything.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prune_gym.arguments import check_number
from prune_gym.budget import Budget
from prune_gym.errors import DataError, InvalidArgumentError, KeepStateError
from prune_gym.files import atomic_path

__all__ = ["COLUMNS", "DEFAULT_TOLERANCE", "OPTIONAL", "RowCheck", "append_results",
           "mean_std", "as_row",
           "read_results", "validate_results", "write_results"]

COLUMNS = ("task", "env_id", "method", "seed", "budget", "constraint", "importance",
           "val_samples", "bn_recalibration", "keep", "macs", "params", "macs_ratio",
           "params_ratio", "feasible", "val_accuracy", "test_accuracy", "finetune_steps",
           "finetuned_val_accuracy", "finetuned_test_accuracy", "evaluations", "wall_time_s",
           "prune_gym_version")
# Cells that may be empty: env_id (methods without an environment), val_samples (the whole
# validation split), and what is measured after the search (test, fine-tune).
OPTIONAL = ("env_id", "val_samples", "test_accuracy", "finetune_steps",
            "finetuned_val_accuracy", "finetuned_test_accuracy")

_INT = ("seed", "val_samples", "bn_recalibration", "macs", "params", "finetune_steps",
        "evaluations")
_FLOAT = ("budget", "macs_ratio", "params_ratio", "val_accuracy", "test_accuracy",
          "finetuned_val_accuracy", "finetuned_test_accuracy", "wall_time_s")
_TEXT = ("task", "env_id", "method", "constraint", "importance", "prune_gym_version")

# Accuracy is recomputed on the same samples with the same BatchNorm batches; what can
# differ is float rounding between the masked and the pruned-in-place evaluation paths,
# which flips a near-tied prediction now and then. Half a point absorbs one or two such
# flips on a validation subset of a few hundred images and still catches a tampered number.
DEFAULT_TOLERANCE = 0.005
_RATIO_ATOL = 1e-12


def _cell(column: str, value: Any) -> str:
    """A value as the text written to the CSV (``repr`` for floats: exact round trip)."""
    if value is None or value == "":
        return ""
    if column == "keep":
        return json.dumps([int(k) if isinstance(k, numbers.Integral) else [int(i) for i in k]
                           for k in value])
    if column == "feasible":
        return "1" if bool(value) else "0"
    if column in _FLOAT:
        return repr(float(value))
    if column in _INT:
        return str(int(value))
    return str(value)


def _parse(column: str, text: str, where: str) -> Any:
    """A CSV cell as a Python value; ``where`` names the file and line for the message."""
    if text == "":
        if column in OPTIONAL:
            return None
        raise DataError(f"{where}: column {column!r} is empty; it must hold a value (only "
                        f"{', '.join(OPTIONAL)} may be empty)")
    try:
        if column == "keep":
            keep = json.loads(text)
            if not isinstance(keep, list) or not all(map(_keep_entry, keep)):
                raise ValueError("not a JSON list of counts >= 1 or of index lists")
            return keep
        if column == "feasible":
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false"):
                raise ValueError("not 1/0 or true/false")
            return lowered in ("1", "true")
        if column in _INT:
            return int(text)
        if column in _FLOAT:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("not finite")
            return value
    except ValueError as exc:
        raise DataError(f"{where}: column {column!r} holds {text!r}, which is not a valid "
                        f"{_kind(column)} ({exc})") from exc
    return text


def _natural(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _keep_entry(entry: Any) -> bool:
    """A group's entry: a count of kept channels (>= 1) or the kept channels' indices."""
    if isinstance(entry, list):
        return bool(entry) and all(_natural(i, 0) for i in entry)
    return _natural(entry, 1)


def _kind(column: str) -> str:
    if column == "keep":
        return ("keep state (a JSON list with, per group, the count of kept channels or the "
                "list of their indices, e.g. [8, 12, 30])")
    if column == "feasible":
        return "flag (1 or 0)"
    return "integer" if column in _INT else "number" if column in _FLOAT else "text"


def _fieldnames(rows: list[Mapping[str, Any]]) -> list[str]:
    extra: list[str] = []
    for row in rows:
        extra.extend(k for k in row if k not in COLUMNS and k not in extra)
    return [*COLUMNS, *extra]


def _check_row(row: Mapping[str, Any], index: int) -> None:
    if not isinstance(row, Mapping):
        raise InvalidArgumentError(f"rows[{index}] must be a dict of the results.csv columns; "
                                   f"got {type(row).__name__}")
    required = [c for c in COLUMNS if c not in OPTIONAL]
    missing = [c for c in required if row.get(c) in (None, "")]
    if missing:
        raise InvalidArgumentError(f"rows[{index}] lacks {', '.join(missing)}; every row needs "
                                   f"the columns {', '.join(required)}")


def _write(path: Path, rows: list[Mapping[str, Any]], fieldnames: list[str]) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _cell(c, row.get(c)) for c in fieldnames})


def as_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` exactly as :func:`read_results` would give it back after writing it (empty
    cells ``None``, numbers parsed); extra keys are kept as they are."""
    _check_row(row, 0)
    parsed = {c: _parse(c, _cell(c, row.get(c)), f"row of {row.get('method', '?')}")
              for c in COLUMNS}
    return {**parsed, **{k: v for k, v in row.items() if k not in COLUMNS}}


def write_results(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` (dicts keyed by :data:`COLUMNS`) as ``path``, replacing it atomically.

    Optional columns may be missing or ``None``; keys beyond the schema become extra columns.

    Raises:
        InvalidArgumentError: a row lacks a required column.
    """
    rows = list(rows)
    for i, row in enumerate(rows):
        _check_row(row, i)
    path = Path(path)
    _write(path, rows, _fieldnames(rows))
    return path


def append_results(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Add ``rows`` to ``path`` (created if absent), keeping the rows already there."""
    path = Path(path)
    before = read_results(path) if path.is_file() else []
    return write_results(path, [*before, *rows])


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a results CSV, every cell parsed (``keep`` as a list, empty as ``None``).

    Raises:
        DataError: the file is missing, lacks schema columns, or a cell does not parse; the
            message names the file, the line and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"results file {str(path)!r} does not exist; pass a results.csv "
                        "written by a search run or the benchmark")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path} is not a prune-gym results file: missing column(s) "
                            f"{', '.join(missing)}; a results.csv has the columns "
                            f"{', '.join(COLUMNS)}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            if None in raw:
                raise DataError(f"{where}: more cells than the header has columns")
            rows.append({c: (_parse(c, raw[c] or "", where) if c in COLUMNS else raw[c])
                         for c in header})
    return rows


@dataclass
class RowCheck:
    """The replay of one results row.

    Attributes:
        line: the row's line in the CSV (the header is line 1).
        task, method: what the row is.
        ok: every recomputed value matches.
        mismatches: ``(column, recorded, replayed)`` for each value that differs.
        notes: what was not compared, or a difference that is not a failure (another
            prune-gym version).
    """

    line: int
    task: str
    method: str
    ok: bool
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _replay_setup(task_name: str, importance: str, val_samples: int | None, cache: dict):
    """The task's network and evaluator, as the task builds them for every method."""
    from prune_gym.tasks import make_task

    if task_name not in cache:
        cache[task_name] = make_task(task_name)
    task = cache[task_name]
    key = (task_name, importance, val_samples)
    if key not in cache:
        cache[key] = (task.network(importance), task.evaluator(val_samples))
    return cache[key]


def _replay(row: dict[str, Any], line: int, tolerance: float, cache: dict) -> RowCheck:
    import prune_gym

    check = RowCheck(line, row["task"], row["method"], ok=True)
    net, evaluator = _replay_setup(row["task"], row["importance"], row["val_samples"], cache)

    def differs(column: str, replayed: Any, atol: float = 0.0) -> None:
        recorded = row[column]
        bad = abs(recorded - replayed) > atol if isinstance(replayed, float) \
            else recorded != replayed
        if bad:
            check.mismatches.append((column, recorded, replayed))

    if evaluator.bn_recalibration != row["bn_recalibration"]:
        check.mismatches.append(("bn_recalibration", row["bn_recalibration"],
                                 evaluator.bn_recalibration))
    keep, importance = row["keep"], row["importance"]
    try:
        macs, params = net.price(keep, importance)
    except KeepStateError as exc:  # another network's state: report it, replay the rest
        check.mismatches.append(("keep", keep, f"not a keep state of this network ({exc})"))
    else:
        differs("macs", macs)
        differs("params", params)
        differs("macs_ratio", macs / net.base_macs, _RATIO_ATOL)
        differs("params_ratio", params / net.base_params, _RATIO_ATOL)
        if row["constraint"] == "latency":  # priced by one machine's measurements
            check.notes.append("feasibility under a latency budget is not replayed (it "
                               "depends on the latency model of the machine that ran it)")
        else:
            bound = Budget(row["budget"], row["constraint"]).bind(net, importance=importance,
                                                                  check=False)
            differs("feasible", bound.feasible(keep))
        accuracy = evaluator.evaluate_keep(net, keep, importance).accuracy
        differs("val_accuracy", float(accuracy), tolerance)
    if any(row.get(c) is not None for c in ("test_accuracy", "finetuned_val_accuracy",
                                             "finetuned_test_accuracy")):
        check.notes.append("test and fine-tuned accuracies are not replayed")
    if row["prune_gym_version"] != prune_gym.__version__:
        check.notes.append(f"recorded with prune-gym {row['prune_gym_version']}, replayed "
                           f"with {prune_gym.__version__}")
    check.ok = not check.mismatches
    return check


def validate_results(path: str | os.PathLike, tolerance: float = DEFAULT_TOLERANCE, *,
                     task: str | None = None, progress=None) -> list[RowCheck]:
    """Replay every row of a results CSV and compare what it reports.

    Each row's task is rebuilt, its network analysed with the row's ``importance`` and its
    evaluator made with the row's ``val_samples`` (:meth:`prune_gym.tasks.Task.network` and
    :meth:`prune_gym.tasks.Task.evaluator`, as every method scores); then MACs, params,
    their ratios and feasibility are recomputed exactly and the validation accuracy within
    ``tolerance``. Test and fine-tuned accuracies are reported, not replayed (a fine-tune
    is a training run).

    Args:
        path: a results CSV.
        tolerance: largest absolute difference in validation accuracy (a fraction in [0, 1])
            that still counts as reproduced.
        task: if given, every row must be for this task.
        progress: optional ``progress(done, total)`` called after each row.

    Returns:
        One :class:`RowCheck` per row, in file order.

    Raises:
        DataError: the file is missing or malformed, or a row is for another task than
            ``task``.
        TaskError: a row names a task that is not registered.
    """
    tolerance = check_number(tolerance, "tolerance", low=0.0, high=1.0, low_open=False,
                             meaning="absolute accuracy difference")
    rows = read_results(path)
    if task is not None:
        other = sorted({r["task"] for r in rows} - {task})
        if other:
            raise DataError(f"{path} holds rows for task(s) {', '.join(other)}, not only "
                            f"task={task!r}; validate it without a task, or pick its own")
    cache: dict = {}
    checks = []
    for i, row in enumerate(rows):
        checks.append(_replay(row, i + 2, tolerance, cache))
        if progress is not None:
            progress(i + 1, len(rows))
    return checks


def mean_std(values) -> str:
    """``mean ± std`` of the measured values (None and NaN left out) for a results table;
    one value alone, ``-`` for none."""
    import numpy as np

    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"
