"""``demo``: the whole workflow on the embedded task in a few minutes.

The baselines and a graph agent prune the task to half its MACs with the same budget of
evaluations; the best state is fine-tuned with the shared distillation recipe and
exported; a table and an accuracy-versus-MACs plot show what each step bought. Everything
lands in one directory that ``finetune``, ``export`` and ``validate`` accept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from agents.cli.common import (
    add_task_option,
    load_task,
    natural_int,
    positive_int,
    rebuild,
    table,
    test_evaluator,
)
from agents.cli.progress import Progress
from prune_gym.errors import InvalidArgumentError

BASELINE_METHODS = ("uniform", "global-magnitude", "random-search")
DEFAULT_AGENT = "ppo-lagrangian-gat"
RESULT_FILES = ("results.csv", "demo.json", "demo.md", "accuracy_vs_macs.png")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "demo", help="baselines and a graph agent, fine-tune and export, in minutes",
        description="On the embedded task at 50 % of its MACs: uniform, global magnitude, "
        "random search and a graph agent (PPOLagrangian + GAT on DNNGraph-v0) with the same "
        "budget of validation evaluations; then the short knowledge-distillation fine-tune of "
        "the best state and its export. Prints a table (MACs and params kept, validation and "
        "test accuracy before and after the fine-tune, evaluations, wall time) and saves it "
        "with an accuracy-versus-MACs plot in --out.")
    add_task_option(p)
    p.add_argument("--budget", type=float, default=0.5,
                   help="fraction of the MACs to keep (default 0.5)")
    p.add_argument("--agent", default=DEFAULT_AGENT,
                   help=f"the learned method beside the baselines (default {DEFAULT_AGENT})")
    p.add_argument("--evaluations", type=positive_int, default=300,
                   help="validation evaluations for random search and the agent (default 300)")
    p.add_argument("--finetune-steps", type=natural_int, default=300,
                   help="distillation steps for the best state (default 300)")
    p.add_argument("--format", default="torchscript",
                   choices=("state_dict", "torchscript", "onnx"),
                   help="export format (default torchscript)")
    p.add_argument("--val-samples", type=positive_int, default=None,
                   help="score on the first N validation images (default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo", help="the demo's directory (default runs/demo)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo in --out")
    p.add_argument("--latency-repeats", type=positive_int, default=15,
                   help="timed samples per model and batch size (default 15)")
    p.set_defaults(fn=run_demo)


def _prepare(out: Path, overwrite: bool) -> None:
    """An empty directory for the demo; an earlier demo is replaced only when asked."""
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {str(out)!r} is a file; choose a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "demo.json").is_file():
            raise InvalidArgumentError(f"--out {str(out)!r} holds files that are not a demo's; "
                                       "choose a new or empty directory")
        if not overwrite:
            raise InvalidArgumentError(f"--out {str(out)!r} already holds a demo; pass "
                                       "--overwrite to replace it, or choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _step(number: int, text: str) -> None:
    print(f"[{number}/5] {text}", file=sys.stderr, flush=True)


def run_demo(args: argparse.Namespace) -> int:
    from agents.cli.export import export_run, print_report
    from agents.cli.finetune import finetune_run
    from agents.cli.plots import accuracy_vs_macs, curve_plot
    from agents.cli.search import check_agent_env
    from agents.methods import make_evaluator, run_method
    from agents.results import as_row, write_results
    from prune_gym.cost import check_budget

    start = time.perf_counter()
    budget = check_budget(args.budget, "--budget")
    agent = check_agent_env(args.agent, None)
    if agent.kind == "heuristic" or agent.name in BASELINE_METHODS:
        raise InvalidArgumentError(f"--agent {args.agent!r} is one of the baselines; choose a "
                                   "learned method from 'prune-gym agents'")
    out = Path(args.out)
    _prepare(out, args.overwrite)
    settings = {k: v for k, v in vars(args).items() if k not in ("fn", "command")}
    (out / "demo.json").write_text(json.dumps({"settings": settings}, indent=1))

    _step(1, f"task {args.task}")
    task = load_task(args.task)
    val = make_evaluator(task, args.val_samples)
    test = test_evaluator(task)
    unpruned = {"val_accuracy": val.evaluate(task.model).accuracy,
                "test_accuracy": test.evaluate(task.model).accuracy}

    _step(2, f"search: {', '.join(BASELINE_METHODS)} and {agent.name}, budget {budget:g} of "
          f"MACs, {args.evaluations} evaluations each")
    rows = []
    for name in (*BASELINE_METHODS, agent.name):
        spend = None if name in ("uniform", "global-magnitude") else args.evaluations
        with Progress(name, total=spend, unit="eval") as bar:
            result = run_method(
                name, task, budget=budget, evaluations=spend, seed=args.seed,
                run_dir=out / name, val_samples=args.val_samples,
                on_progress=lambda e, best, bar=bar: bar.update(
                    e, "" if best is None else f"best feasible val acc {best:.4f}"))
        curve_plot(result.history, out / name / "curve.png", f"{name} on {task.name}")
        row = as_row(result.row())
        row["test_accuracy"] = test.evaluate(rebuild(row, task).model).accuracy
        rows.append(row)
        print(f"  {name}: val {result.val_accuracy:.4f}, MACs kept {result.macs_ratio:.3f}, "
              f"{result.evaluations} evaluations, {result.wall_time_s:.1f} s", file=sys.stderr)
    write_results(out / "results.csv", rows)

    _step(3, f"fine-tune the best feasible state ({args.finetune_steps} distillation steps)")
    tuned = finetune_run(out, steps=args.finetune_steps, task=task)
    rows = [tuned if r["method"] == tuned["method"] else r for r in rows]

    _step(4, f"export the fine-tuned {tuned['method']} model ({args.format}) and time it")
    report = export_run(out, args.format, task=task, repeats=args.latency_repeats)

    _step(5, "report")
    accuracy_vs_macs(rows, unpruned, out / "accuracy_vs_macs.png",
                     f"{task.name}: test accuracy vs MACs kept (budget {budget:g})")
    header = ["method", "MACs kept", "params kept", "val acc", "test acc", "tuned val",
              "tuned test", "evaluations", "wall s"]
    lines = [["unpruned", 1.0, 1.0, unpruned["val_accuracy"], unpruned["test_accuracy"],
              None, None, None, None]]
    lines += [[r["method"] + ("" if r["feasible"] else " (infeasible)"), r["macs_ratio"],
               r["params_ratio"], r["val_accuracy"], r["test_accuracy"],
               r["finetuned_val_accuracy"], r["finetuned_test_accuracy"], r["evaluations"],
               f"{r['wall_time_s']:.1f}"] for r in rows]
    text = table(header, lines)
    total = time.perf_counter() - start
    print(f"\n{task.name}, budget {budget:g} of MACs; selection on validation, test reported "
          f"only; the best state fine-tuned for {tuned['finetune_steps']} steps")
    print(text)
    print()
    print_report(report)
    print(f"\ndemo finished in {total:.0f} s; everything is in {out}/ (results.csv, "
          "accuracy_vs_macs.png, demo.md, one run directory per method)")
    print(f"check it: prune-gym validate {out}/results.csv")
    (out / "demo.md").write_text(
        f"# prune-gym demo: {task.name} at {budget:g} of MACs\n\n```\n{text}\n```\n\n"
        f"Fine-tuned: {tuned['method']}, {tuned['finetune_steps']} steps of knowledge "
        f"distillation. Exported as {report['format']}: {report['size_bytes']:,} bytes "
        f"(original {report['original_size_bytes']:,}); latency at batch 1 "
        f"{1e3 * report['latency']['1']['pruned_s']:.3f} ms (original "
        f"{1e3 * report['latency']['1']['original_s']:.3f} ms). Wall time {total:.0f} s.\n")
    (out / "demo.json").write_text(json.dumps(
        {"settings": settings, "unpruned": unpruned, "wall_time_s": total, "export": report},
        indent=1))
    return 0
