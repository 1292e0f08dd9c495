"""Build the leaderboard tables from the submissions, and import the agents benchmark's rows.

A submission is a folder ``leaderboard/entries/<task>@<budget>/<name>/`` holding
``submission.json`` (who and what: see ``TEMPLATE``) and ``results.csv`` (one row per seed
in the ``agents.results`` schema, so ``prune-gym validate`` replays it). This script checks
every submission, ranks them per task and budget, and writes the tables into
``leaderboard/README.md`` between the ``BEGIN TABLES``/``END TABLES`` markers; a test fails
when the committed tables are stale, and CI replays every committed row.

    python leaderboard/build.py                      # rewrite the tables
    python leaderboard/build.py --import-benchmark   # (re)make the benchmark's entries first
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.results import mean_std, read_results, write_results  # noqa: E402
from prune_gym.errors import DataError  # noqa: E402

ENTRIES = HERE / "entries"
README = HERE / "README.md"
BEGIN, END = "<!-- BEGIN TABLES -->", "<!-- END TABLES -->"
# The standard tasks and budgets, in the order of the tables.
STANDARD = ("digits-cnn-v1@0.5", "digits-resnet-v1@0.5", "cifar10-resnet20-v0@0.5",
            "cifar10-resnet20-v0@0.3", "cifar10-resnet56-v0@0.5")
REQUIRED = {"algorithm": str, "authors": str, "code": str, "description": str, "date": str}
TEMPLATE = {"algorithm": "PPOLagrangian + GraphPolicy (GAT) on DNNGraph-v0",
            "authors": "your name(s)",
            "code": "https://github.com/you/your-repo (the exact commit that made results.csv)",
            "description": "one sentence: the algorithm and anything a reader needs to replay it",
            "date": "YYYY-MM-DD"}


def check_submission(folder: Path) -> tuple[dict, list[dict]]:
    """A submission's metadata and rows, or a DataError saying what is missing or wrong."""
    config = folder.parent.name
    meta_path, rows_path = folder / "submission.json", folder / "results.csv"
    for path in (meta_path, rows_path):
        if not path.is_file():
            raise DataError(f"{folder}: {path.name} is missing; a submission holds "
                            "submission.json and results.csv (see leaderboard/README.md)")
    meta = json.loads(meta_path.read_text())
    for key, kind in REQUIRED.items():
        if not isinstance(meta.get(key), kind) or not meta[key].strip():
            raise DataError(f"{meta_path}: {key!r} must be a non-empty {kind.__name__} "
                            f"(template: {TEMPLATE[key]!r})")
    rows = read_results(rows_path)
    if not rows:
        raise DataError(f"{rows_path} holds no rows")
    task, _, budget = config.partition("@")
    for i, row in enumerate(rows, start=2):
        if row["task"] != task or not math.isclose(row["budget"], float(budget)):
            raise DataError(f"{rows_path}:{i}: a row for {row['task']}@{row['budget']:g} in "
                            f"the folder of {config}; each folder holds one task and budget")
    seeds = [r["seed"] for r in rows]
    if len(set(seeds)) != len(seeds):
        raise DataError(f"{rows_path}: seeds repeat ({seeds}); one row per seed")
    return meta, rows


def _link(code: str) -> str:
    """A submission's code link as the README links it (repository paths are relative)."""
    return code if "://" in code else f"../{code}"


def tables() -> str:
    """Every standard task and budget's ranking, as Markdown."""
    out = []
    found = defaultdict(list)
    for folder in sorted(ENTRIES.glob("*@*/*")):
        if folder.is_dir():
            meta, rows = check_submission(folder)
            found[folder.parent.name].append((folder.name, meta, rows))
    unknown = sorted(set(found) - set(STANDARD))
    if unknown:
        raise DataError(f"leaderboard/entries has folders for {unknown}, which are not standard "
                        f"tasks and budgets: {', '.join(STANDARD)}")
    for config in STANDARD:
        task, _, budget = config.partition("@")
        out += [f"### {task}, budget {budget} of MACs", ""]
        if not found[config]:
            out += ["No submission yet.", ""]
            continue
        out += ["| rank | submission | algorithm | seeds | val acc | test acc | fine-tuned test "
                "| MACs ratio | params ratio | evaluations | wall s |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        ranked = sorted(found[config], key=lambda e: -np.mean([r["val_accuracy"]
                                                               for r in e[2]]))
        for rank, (name, meta, rows) in enumerate(ranked, start=1):
            out.append(
                f"| {rank} | [{name}]({_link(meta['code'])}) | {meta['algorithm']} | {len(rows)} "
                f"| {mean_std([r['val_accuracy'] for r in rows])} "
                f"| {mean_std([r['test_accuracy'] for r in rows])} "
                f"| {mean_std([r['finetuned_test_accuracy'] for r in rows])} "
                f"| {np.mean([r['macs_ratio'] for r in rows]):.3f} "
                f"| {np.mean([r['params_ratio'] for r in rows]):.3f} "
                f"| {np.mean([r['evaluations'] for r in rows]):.0f} "
                f"| {np.mean([r['wall_time_s'] for r in rows]):.0f} |")
        out.append("")
    return "\n".join(out)


def build(check: bool = False) -> bool:
    """Write the tables into README.md (``check``: only say whether they are current)."""
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{tables()}\n{END}{tail}"
    if check:
        return new == text
    README.write_text(new)
    return True


def import_benchmark(path: Path = ROOT / "benchmarks" / "results" / "agents.csv") -> None:
    """One submission per method of the agents benchmark, for every standard config."""
    from agents.methods import METHODS, method_names

    names = method_names()
    grouped = defaultdict(list)
    for row in read_results(path):
        config = f"{row['task']}@{row['budget']:g}"
        if config in STANDARD:
            grouped[(config, row["method"])].append(row)
    for (config, method), rows in grouped.items():
        folder = ENTRIES / config / f"prune-gym-{method}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = METHODS.get(method) if method in names else None
        description = spec.description if spec else \
            "the GAT graph policy trained on digits-resnet-v1, sampled on this task (zero-shot)"
        meta = {"algorithm": description, "authors": "prune-gym maintainers",
                "code": "benchmarks/agents.py",
                "description": f"agents benchmark row: `prune-gym benchmark agents`, method "
                               f"{method}, {len(rows)} seed(s), equal evaluations",
                "date": datetime.date.today().isoformat()}
        (folder / "submission.json").write_text(json.dumps(meta, indent=1) + "\n")
        write_results(folder / "results.csv", sorted(rows, key=lambda r: r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--import-benchmark", action="store_true")
    args = parser.parse_args()
    if args.import_benchmark:
        import_benchmark()
    build()


if __name__ == "__main__":
    main()
