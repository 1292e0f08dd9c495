"""``search``: one agent or baseline on one task, to a run directory; ``baselines``: the three
baselines side by side in a table."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from pathlib import Path

from agents.cli.common import (
    add_task_option,
    load_task,
    positive_int,
    rebuild,
    table,
    test_evaluator,
)
from agents.cli.progress import Progress
from prune_gym.errors import InvalidArgumentError

DEFAULT_EVALUATIONS = 100  # when a search or an agent is given neither budget of work


def add_commands(sub) -> None:
    p = sub.add_parser(
        "search", help="prune a task with an agent or a baseline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run one agent or baseline (see 'prune-gym agents') on a task to a budget, "
            "showing the best feasible result so far.", 80) + "\n\n" + textwrap.fill(
            "The run directory gets search.json (the settings), curve.csv and curve.png (best "
            "feasible validation accuracy against evaluations), best.json (the best keep "
            "state) and results.csv (one row; check it with 'prune-gym validate'); RL agents "
            "add config.json, progress.csv, TensorBoard events, episodes.csv, checkpoints/ "
            "and model.zip. Ctrl-C leaves a valid run directory that --resume continues.", 80))
    add_task_option(p)
    p.add_argument("--agent", required=True, metavar="NAME", help="a name from 'prune-gym agents'")
    p.add_argument("--env", default=None, metavar="ID",
                   help="the environment; optional, each RL agent has its own (it is checked)")
    p.add_argument("--budget", type=float, default=None, metavar="B",
                   help="fraction of the unpruned MACs (or params, or latency) to keep, in "
                   "(0, 1] (default: the task's)")
    p.add_argument("--constraint", default="macs", choices=("macs", "params", "latency"),
                   help="what the budget limits (default macs; latency needs --latency-model)")
    add_latency_option(p)
    p.add_argument("--evaluations", type=positive_int, default=None, metavar="K",
                   help="validation evaluations the search may spend (default "
                   f"{DEFAULT_EVALUATIONS} for searches and agents without --timesteps)")
    p.add_argument("--timesteps", type=positive_int, default=None, metavar="N",
                   help="environment steps for an RL agent (it stops at whichever of "
                   "--timesteps and --evaluations comes first)")
    p.add_argument("--seed", type=int, default=0, help="seeds the agent and the search")
    p.add_argument("--val-samples", type=positive_int, default=None, metavar="N",
                   help="score on the first N validation images (default all)")
    p.add_argument("--round-to", type=positive_int, default=None, metavar="M",
                   help="keep every group's channel count a multiple of M (e.g. 8: whole "
                   "SIMD vectors, so the pruned model is as fast as its MACs say); not for "
                   "agents that choose channels one by one")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="the run directory (default runs/AGENT-TASK-bBUDGET-sSEED)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (the same settings are required)")
    p.set_defaults(fn=run_search)

    p = sub.add_parser("baselines", help="prune a task with every baseline (a table)",
                       description="Uniform, global magnitude and random search on one task "
                       "and budget, with their test accuracy beside the unpruned model's.")
    add_task_option(p)
    p.add_argument("--budget", type=float, default=None,
                   help="fraction of the unpruned metric to keep (default: the task's)")
    p.add_argument("--constraint", default="macs", choices=("macs", "params", "latency"))
    add_latency_option(p)
    p.add_argument("--evaluations", "--trials", type=positive_int, default=20,
                   help="random-search candidates (default 20)")
    p.add_argument("--val-samples", type=positive_int, default=None)
    p.add_argument("--round-to", type=positive_int, default=None, metavar="M",
                   help="keep every group's channel count a multiple of M")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the rows to this results.csv")
    p.set_defaults(fn=run_baselines)


def check_agent_env(agent: str, env: str | None):
    """The agent's :class:`~agents.methods.Method`, refusing an ``--env`` it does not use."""
    import prune_gym
    from agents.methods import METHODS, check_method

    method = check_method(agent)
    if env is None:
        return method
    if env not in prune_gym.ENV_IDS:
        raise InvalidArgumentError(f"--env {env!r} is not a prune-gym environment; choose one "
                                   f"of {', '.join(prune_gym.ENV_IDS)}")
    if method.env_id != env:
        fitting = [m.name for m in METHODS.values() if m.env_id == env]
        uses = f"trains on {method.env_id}" if method.env_id else "uses no environment"
        raise InvalidArgumentError(f"--agent {agent!r} {uses}, not --env {env!r}; drop --env, "
                                   f"or choose an agent for {env}: {', '.join(fitting)}")
    return method


def add_latency_option(p) -> None:
    p.add_argument("--latency-model", default=None, metavar="FILE",
                   help="with --constraint latency: the task network's latency model on this "
                   "machine ('prune-gym latency-model --task T --out FILE' makes one)")


def _budget(args: argparse.Namespace, task=None):
    """The options' :class:`~prune_gym.budget.Budget` (checked once; ``--budget`` defaults
    to the task's)."""
    from prune_gym.budget import Budget

    fraction = args.budget if args.budget is not None else task.budget
    return Budget(fraction, args.constraint, getattr(args, "round_to", None),
                  getattr(args, "latency_model", None), argument="--budget")


def _resume_command(args: argparse.Namespace, out: Path) -> str:
    words = ["prune-gym", "search", "--task", args.task, "--agent", args.agent,
             "--budget", f"{args.budget:g}", "--constraint", args.constraint,
             "--seed", str(args.seed), "--out", str(out)]
    for flag, value in (("--evaluations", args.evaluations), ("--timesteps", args.timesteps),
                        ("--val-samples", args.val_samples), ("--round-to", args.round_to),
                        ("--latency-model", args.latency_model)):
        if value is not None:
            words += [flag, str(value)]
    return shlex.join([*words, "--resume"])


def run_search(args: argparse.Namespace) -> int:
    from agents.cli.plots import curve_plot
    from agents.methods import run_method

    method = check_agent_env(args.agent, args.env)
    spec = _budget(args) if args.budget is not None else None  # before the task is built
    task = load_task(args.task)
    spec = spec or _budget(args, task)
    args.budget = spec.fraction
    if method.kind != "heuristic" and args.evaluations is None and args.timesteps is None:
        args.evaluations = DEFAULT_EVALUATIONS
    if method.kind == "heuristic":
        args.evaluations = args.timesteps = None  # one state, one evaluation
    out = Path(args.out) if args.out else \
        Path("runs") / f"{args.agent}-{task.name}-b{args.budget:g}-s{args.seed}"
    args.interrupt_hint = (f"the run directory {out} is kept; continue it with\n  "
                           f"{_resume_command(args, out)}")
    total = args.evaluations if args.evaluations is not None else None
    with Progress(f"{args.agent} on {task.name}", total=total, unit="eval") as bar:
        def on_progress(evaluations: int, best: float | None) -> None:
            bar.update(evaluations, "no feasible state yet" if best is None
                       else f"best feasible val acc {best:.4f}")

        result = run_method(args.agent, task, budget=spec, evaluations=args.evaluations,
                            timesteps=args.timesteps, seed=args.seed, run_dir=out,
                            resume=args.resume, val_samples=args.val_samples,
                            on_progress=on_progress)
    curve_plot(result.history, out / "curve.png",
               f"{args.agent} on {task.name}, budget {args.budget:g} of {args.constraint}")
    state = "feasible" if result.feasible else "NOT feasible (no state met the budget)"
    print(f"{args.agent} on {task.name}, budget {args.budget:g} of {args.constraint}: "
          f"best state {state}")
    print(table(["keep", "MACs kept", "params kept", "val acc", "evaluations", "wall s"],
                [[str(result.keep), result.macs_ratio, result.params_ratio,
                  result.val_accuracy, result.evaluations, f"{result.wall_time_s:.1f}"]]))
    print(f"run directory: {out}  (results.csv, curve.png, best.json)")
    print(f"next: prune-gym validate {shlex.quote(str(out / 'results.csv'))}; "
          f"prune-gym finetune {shlex.quote(str(out))}; "
          f"prune-gym export {shlex.quote(str(out))} --format torchscript")
    return 0


def run_baselines(args: argparse.Namespace) -> int:
    from agents.methods import baseline_names, run_method
    from prune_gym.results import as_row, write_results

    spec = _budget(args) if args.budget is not None else None  # before the task is built
    task = load_task(args.task)
    spec = spec or _budget(args, task)
    budget = spec.fraction
    test = test_evaluator(task)
    base_val = task.evaluator(args.val_samples).evaluate(task.model).accuracy
    base_test = test.evaluate(task.model).accuracy
    rows, lines = [], [["unpruned", 1.0, 1.0, base_val, base_test, "-"]]
    for name in baseline_names():
        with Progress(name, total=None if name != "random-search" else args.evaluations,
                      unit="eval") as bar:
            result = run_method(name, task, budget=spec,
                                evaluations=args.evaluations if name == "random-search"
                                else None, seed=args.seed, val_samples=args.val_samples,
                                on_progress=lambda e, best, bar=bar: bar.update(e))
        row = as_row(result.row())
        row["test_accuracy"] = test.evaluate(rebuild(row, task).model).accuracy
        rows.append(row)
        lines.append([name, result.macs_ratio, result.params_ratio, result.val_accuracy,
                      row["test_accuracy"], result.evaluations])
    print(f"{task.name}, budget {budget:g} of {args.constraint} (selection on validation, "
          "test reported only)")
    print(table(["method", "MACs kept", "params kept", "val acc", "test acc", "evaluations"],
                lines))
    if args.out:
        write_results(args.out, rows)
        print(f"rows written to {args.out}", file=sys.stderr)
    return 0
