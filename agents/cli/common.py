"""What several commands share: task and budget options, run directories, and how a pruned
state is scored on the test split and fine-tuned (the same way ``benchmarks/agents.py``
scores its cells, so a CLI run and a benchmark row mean the same thing)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prune_gym.errors import InvalidArgumentError

DEFAULT_TASK = "digits-cnn-v1"
FINETUNED = "finetuned.pt"  # the fine-tuned pruned model in a run directory (save_model)


def add_task_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=DEFAULT_TASK,
                        help=f"a task name from 'prune-gym tasks' (default {DEFAULT_TASK})")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the message names what would be right)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value
    return parse


positive_int = _int_at_least(1)
natural_int = _int_at_least(0)


def load_task(name: str):
    """The task called ``name`` (TaskError lists the known ones)."""
    from prune_gym.tasks import make_task

    return make_task(name)


def run_error(message: str) -> Exception:
    """A :class:`agents.train.RunDirectoryError` (what a bad run directory raises)."""
    from agents.train import RunDirectoryError

    return RunDirectoryError(message)


def read_run_rows(run: str | Path) -> tuple[Path, list[dict[str, Any]]]:
    """The run directory and its ``results.csv`` rows; an error if it is not a run."""
    from agents.results import read_results

    path = Path(run)
    if not path.is_dir():
        raise run_error(f"RUN={str(path)!r} does not exist; pass a directory written by "
                        "'prune-gym search --out DIR' or 'prune-gym demo'")
    if not (path / "results.csv").is_file():
        raise run_error(f"RUN={str(path)!r} is not a finished run: it has no results.csv "
                        "(an interrupted search gets one when it is resumed and finishes)")
    rows = read_results(path / "results.csv")
    if not rows:
        raise run_error(f"{path / 'results.csv'} holds no rows")
    return path, rows


def pick_row(rows: list[dict[str, Any]], method: str | None, where: Path) -> int:
    """Index of the row for ``method``, or of the best feasible row (by validation accuracy)."""
    if method is not None:
        found = [i for i, r in enumerate(rows) if r["method"] == method]
        if not found:
            raise InvalidArgumentError(
                f"--method {method!r} has no row in {where}; it holds "
                f"{', '.join(dict.fromkeys(r['method'] for r in rows))}")
        return found[0]
    feasible = [i for i, r in enumerate(rows) if r["feasible"]]
    pool = feasible or list(range(len(rows)))
    return max(pool, key=lambda i: rows[i]["val_accuracy"])


@dataclass
class Scored:
    """A row's state rebuilt: the task, its network and evaluator, and the pruned model
    (BatchNorm recalibrated exactly as the state was evaluated)."""

    task: Any
    net: Any
    evaluator: Any
    model: Any


def rebuild(row: dict[str, Any], task=None) -> Scored:
    """The pruned model of a results row, as the method scored it."""
    from agents.methods import make_evaluator, make_network

    task = task if task is not None else load_task(row["task"])
    if task.name != row["task"]:
        raise InvalidArgumentError(f"the row is for task {row['task']!r}, not {task.name!r}")
    net = make_network(task, importance=row["importance"])
    evaluator = make_evaluator(task, row["val_samples"])
    model = net.export(row["keep"], row["importance"])
    evaluator.recalibrate(model)
    return Scored(task, net, evaluator, model)


def test_evaluator(task, test_samples: int | None = None):
    """The test split's evaluator (reported, never used for selection)."""
    from prune_gym.evaluate import Evaluator

    return Evaluator(task.data.test.as_tuple(), max_samples=test_samples)


def finetune(scored: Scored, row: dict[str, Any], steps: int, *, batch_size: int = 64,
             lr: float = 0.01, test_samples: int | None = None, progress=None) -> dict:
    """Fine-tune ``scored.model`` in place with the shared distillation recipe; the row's
    test accuracy before and validation and test accuracy after (``row`` is not changed).

    Validation after the fine-tune is measured without BatchNorm recalibration: the trained
    statistics are the model's own now.
    """
    from prune_gym.evaluate import Evaluator
    from prune_gym.finetune import distill

    task = scored.task
    test = test_evaluator(task, test_samples)
    before = test.evaluate(scored.model).accuracy
    start = time.perf_counter()
    distill(scored.model, task.model, task.data.train.as_tuple(), steps=steps,
            batch_size=batch_size, lr=lr, seed=row["seed"], progress=progress)
    plain = Evaluator(task.val_data, max_samples=row["val_samples"])
    return {"test_accuracy": before, "finetune_steps": steps,
            "finetuned_val_accuracy": plain.evaluate(scored.model).accuracy,
            "finetuned_test_accuracy": test.evaluate(scored.model).accuracy,
            "finetune_s": time.perf_counter() - start}


def model_metadata(row: dict[str, Any], **extra) -> dict[str, Any]:
    """What a saved model file says about itself (task, method, keep state, scores)."""
    keys = ("task", "method", "budget", "constraint", "importance", "keep", "macs", "params",
            "macs_ratio", "params_ratio", "val_accuracy", "seed")
    return json.loads(json.dumps({**{k: row[k] for k in keys}, **extra}))


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers rounded, missing values as '-'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths))),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines)
