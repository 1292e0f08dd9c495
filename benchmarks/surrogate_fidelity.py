"""How far a surrogate can be trusted: its rank fidelity on held-out states of each table.

For every task with a state table (``prune_gym/surrogate/tables``) the surrogate
(:mod:`prune_gym.surrogate.model`) is fitted on part of the table and scored on the rest,
two ways: a seeded random 20 % held out, and each sampling source held out in turn (fitted
on the other sources: a surrogate must rank states of a kind it never saw). Reported per
target column: Spearman and Kendall against the real evaluation, overall and among the top
10 % of held-out states, and the mean absolute error; and the time of one prediction.

    python benchmarks/surrogate_fidelity.py                 # every table
    python benchmarks/surrogate_fidelity.py --tasks digits-cnn-v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from machine_info import describe_machine  # noqa: E402 - beside this script

from agents.methods import make_network  # noqa: E402
from prune_gym.surrogate.model import fit_surrogate, rank_fidelity  # noqa: E402
from prune_gym.surrogate.table import TABLES_DIR, load_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("val_accuracy", "test_accuracy", "finetuned_test_accuracy")
GOALS = "Spearman >= 0.9 overall and >= 0.7 among the top 10 % (val_accuracy)"


def held_out(table, scores, train: np.ndarray, test: np.ndarray) -> dict:
    surrogate = fit_surrogate(table, scores, rows=train)
    out = {}
    masks = [table.unpack_mask(int(i)) for i in test]
    for target in TARGETS:
        if target not in surrogate.models:
            continue
        actual = table.columns[target][test]
        ok = np.isfinite(actual)
        if ok.sum() < 10:
            continue
        predicted = surrogate.predict(table.counts[test][ok], [m for m, k in zip(masks, ok) if k],
                                      macs_ratio=table.columns["macs_ratio"][test][ok],
                                      params_ratio=table.columns["params_ratio"][test][ok],
                                      target=target)
        out[target] = rank_fidelity(predicted, actual[ok])
    return out


def predict_seconds(table, scores) -> float:
    """Median wall time of one single-state prediction of validation accuracy."""
    surrogate = fit_surrogate(table, scores, targets=("val_accuracy",))
    times = []
    for i in range(200):
        row = i % len(table)
        start = time.perf_counter()
        surrogate.predict(table.counts[row], None if table.masks[row] is None
                          else [table.unpack_mask(row)],
                          macs_ratio=table.columns["macs_ratio"][row],
                          params_ratio=table.columns["params_ratio"][row])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def evaluate_task(task: str) -> dict:
    table = load_table(task)
    net = make_network(task)
    scores = [net.scores(g) for g in range(len(net.groups))]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(table))
    cut = int(0.8 * len(table))
    result = {"task": task, "rows": len(table), "table_sha256": table.manifest["sha256"],
              "random_20": held_out(table, scores, order[:cut], order[cut:]),
              "by_source": {}}
    for source in sorted(set(table.sources)):
        test = np.flatnonzero(table.sources == source)
        train = np.flatnonzero(table.sources != source)
        if len(test) >= 20:
            result["by_source"][source] = held_out(table, scores, train, test)
    result["predict_ms"] = 1e3 * predict_seconds(table, scores)
    return result


def _fmt(m: dict | None) -> str:
    if not m:
        return "- | - | - | - | -"
    return (f"{m['spearman']:.3f} | {m['kendall']:.3f} | {m['spearman_top']:.3f} | "
            f"{m['kendall_top']:.3f} | {m['mae']:.4f}")


def report(results: list[dict], command: str) -> str:
    lines = ["# Surrogate fidelity", "",
             f"`{command}` on {describe_machine()}. Goal: {GOALS}.", "",
             "Fitted on the rest of each table, scored on held-out states: a seeded random 20 %, "
             "and each sampling source held out in turn (the surrogate never saw a state of "
             "that kind). Top 10 % = the best tenth of the held-out states by real score.", ""]
    for r in results:
        lines += [f"## {r['task']} ({r['rows']} states, table sha256 {r['table_sha256'][:12]})",
                  "", f"One prediction: {r['predict_ms']:.3f} ms (median).", "",
                  "| held out | target | n | Spearman | Kendall | Spearman top 10 % "
                  "| Kendall top 10 % | MAE |", "|---|---|---|---|---|---|---|---|"]
        for target, m in r["random_20"].items():
            lines.append(f"| random 20 % | {target} | {m['n']} | {_fmt(m)} |")
        for source, by_target in r["by_source"].items():
            for target, m in by_target.items():
                lines.append(f"| source {source} | {target} | {m['n']} | {_fmt(m)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=None, help="comma-separated (default: every table)")
    parser.add_argument("--name", default="surrogate_fidelity")
    args = parser.parse_args()
    tasks = (args.tasks.split(",") if args.tasks
             else sorted(p.stem for p in TABLES_DIR.glob("*.json")))
    results = [evaluate_task(t) for t in tasks]
    command = "python benchmarks/surrogate_fidelity.py " + " ".join(sys.argv[1:])
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"command": command, "machine": describe_machine(), "results": results}, indent=1))
    (RESULTS / f"{args.name}.md").write_text(report(results, command) + "\n")
    print(report(results, command))


if __name__ == "__main__":
    main()
