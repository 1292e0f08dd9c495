"""``validate RESULTS.csv``: replay every row and flag what does not reproduce (exit code 1)."""

from __future__ import annotations

import argparse

from agents.cli.progress import Progress
from prune_gym.errors import DataError


def add_commands(sub) -> None:
    from prune_gym.results import DEFAULT_TOLERANCE

    p = sub.add_parser(
        "validate", help="replay a results.csv and flag rows that do not reproduce",
        description="Rebuild each row's task, network and evaluator exactly as recorded, "
        "recompute MACs, params, their ratios and feasibility exactly and the validation "
        "accuracy within --tolerance, and flag every row that differs. Test and fine-tuned "
        "accuracies are not replayed. Exit code 0 when every row reproduces, 1 when one does "
        "not, 2 when the file cannot be read.")
    p.add_argument("results", metavar="RESULTS.csv", help="a results.csv (search, demo, "
                   "benchmark)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest validation-accuracy difference (absolute, a fraction) that "
                   f"still reproduces (default {DEFAULT_TOLERANCE}: float rounding between "
                   "evaluation paths can flip a near-tied image)")
    p.add_argument("--task", default=None, help="require every row to be for this task")
    p.set_defaults(fn=run_validate)


def _value(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def run_validate(args: argparse.Namespace) -> int:
    from prune_gym.results import read_results, validate_results

    total = len(read_results(args.results))
    if not total:
        raise DataError(f"{args.results} holds no rows to validate (only a header)")
    with Progress("validate", total=total, unit="row") as bar:
        checks = validate_results(args.results, args.tolerance, task=args.task,
                                  progress=lambda done, n: bar.update(done))
    failed = [c for c in checks if not c.ok]
    for c in checks:
        verdict = "ok" if c.ok else "DOES NOT REPRODUCE"
        print(f"line {c.line}: {c.method} on {c.task}: {verdict}")
        for column, recorded, replayed in c.mismatches:
            print(f"    {column}: recorded {_value(recorded)}, replayed {_value(replayed)}")
        for note in c.notes:
            print(f"    note: {note}")
    print(f"{len(checks) - len(failed)} of {len(checks)} row(s) reproduce (MACs and params "
          f"exactly, validation accuracy within {args.tolerance:g})"
          + (f"; {len(failed)} flagged" if failed else ""))
    return 1 if failed else 0
