"""``envs``, ``tasks``, ``agents``: what exists, one line each; ``describe``: a task's groups."""

from __future__ import annotations

import argparse
import sys
import warnings

from agents.cli.common import add_task_option, load_task


def add_commands(sub) -> None:
    sub.add_parser("envs", help="list the pruning environments",
                   description="The pruning environments (Gymnasium ids), one line each."
                   ).set_defaults(fn=run_envs)
    sub.add_parser("tasks", help="list the named tasks",
                   description="The named, versioned tasks (a trained model, its data and a "
                   "default budget), one line each.").set_defaults(fn=run_tasks)
    sub.add_parser("agents", help="list the agents and baselines",
                   description="Every method search accepts as --agent: RL agents (with the "
                   "environment they train on), searches and heuristics, one line each."
                   ).set_defaults(fn=run_agents)
    p = sub.add_parser("describe", help="show a task's prunable channel groups",
                       description="Analyse a task's model and show every channel group: "
                       "its size, its layers, and why it is excluded if it is; and the share "
                       "of the model's MACs the prunable groups control.")
    add_task_option(p)
    p.add_argument("--importance", default="l1",
                   help="channel selection: l1, l2, taylor, bn_scale or random (default l1)")
    p.set_defaults(fn=run_describe)


def env_summaries() -> dict[str, str]:
    """Each environment id with the first line of its class's description."""
    import prune_gym

    out = {}
    for env_id in prune_gym.ENV_IDS:
        cls = getattr(prune_gym, env_id.split("-")[0] + "Env")
        out[env_id] = (cls.__doc__ or "").strip().splitlines()[0]
    return out


def run_envs(args: argparse.Namespace) -> int:
    for env_id, line in env_summaries().items():
        print(f"{env_id:<16} {line}")
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    from prune_gym.tasks.registry import describe_task, list_tasks

    for name in list_tasks():
        print(f"{name:<22} {describe_task(name)}")
    return 0


def run_agents(args: argparse.Namespace) -> int:
    from agents.methods import METHODS, method_names

    for name in method_names():
        m = METHODS[name]
        print(f"{name:<20} {m.kind:<9} {m.env_id or '-':<15} {m.description}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from prune_gym.network import PruningWarning

    task = load_task(args.task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PruningWarning)
        net = task.network(args.importance)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print(net.describe())
    return 0
