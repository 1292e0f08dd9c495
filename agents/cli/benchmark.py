"""``benchmark SUITE [ARGS...]``: run a named suite of the benchmark scripts (benchmarks/*.py).

The scripts live in the source checkout, not in the installed package (they write their
tables under ``benchmarks/results``), so this command runs them from the checkout this
package was installed from, or from ``./benchmarks``. Extra arguments go to the script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from prune_gym.errors import InvalidArgumentError


@dataclass(frozen=True)
class Suite:
    script: str
    args: tuple[str, ...]
    description: str


SUITES: dict[str, Suite] = {
    "engine": Suite("engine.py", (), "analysis, pricing, pruning and evaluation speed"),
    "envs": Suite("envs.py", (), "steps per second, step overhead, vector scaling, memory"),
    # The quick grid is a subset of the full one with the same per-cell settings, so its
    # cells (saved under benchmarks/results/agents_cells) are valid cells of the full grid.
    "agents-quick": Suite("agents.py", ("--configs", "digits-cnn-v1@0.5", "--seeds", "1"),
                          "every method on digits-cnn-v1 at 0.5, one seed (minutes)"),
    "agents": Suite("agents.py", (), "every method on every task and budget, 3 seeds (hours)"),
    "latency": Suite("latency.py", (), "CPU latency of exported pruned models vs originals"),
    "policies": Suite("policies.py", (), "what the graph policies cost beside evaluations"),
    "lagrangian": Suite("lagrangian.py", (), "does the Lagrange multiplier settle"),
    "reward-signal": Suite("reward_signal.py", (), "accuracy as a reward, with and without "
                           "BatchNorm recalibration"),
    "transfer": Suite("transfer.py", (), "a graph policy transferred zero-shot to ResNet-20"),
    "reference-accuracy": Suite("reference_accuracy.py", (), "top-1 of the reference "
                                "CIFAR-10 checkpoints"),
}


def add_commands(sub) -> None:
    lines = "\n".join(f"  {name:<19} benchmarks/{s.script:<21} {s.description}"
                      for name, s in SUITES.items())
    p = sub.add_parser(
        "benchmark", help="run a named benchmark suite (benchmarks/*.py)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run a benchmark script from the source checkout; it writes its tables under "
            "benchmarks/results. Arguments after SUITE go to the script (e.g. 'prune-gym "
            "benchmark engine --models resnet56'; 'prune-gym benchmark SUITE --help' shows "
            "the script's own options).", 88) + f"\n\nsuites:\n{lines}")
    p.add_argument("suite", metavar="SUITE", help="a suite name (listed above)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    p.set_defaults(fn=run_benchmark)


def benchmarks_dir() -> Path:
    """The checkout's ``benchmarks`` folder (beside the ``agents`` package, or under cwd)."""
    import agents

    for candidate in (Path(agents.__file__).resolve().parents[1] / "benchmarks",
                      Path.cwd() / "benchmarks"):
        if (candidate / "machine_info.py").is_file():
            return candidate
    raise InvalidArgumentError("the benchmark scripts were not found: they live in the "
                               "source checkout (benchmarks/*.py); run prune-gym benchmark "
                               "from a clone of prune-gym, or install it with pip install -e")


def suite_command(name: str, extra: list[str]) -> list[str]:
    """The command line that runs suite ``name`` with ``extra`` arguments."""
    if name not in SUITES:
        raise InvalidArgumentError(f"SUITE={name!r} is not a benchmark suite; choose one of "
                                   f"{', '.join(SUITES)}")
    suite = SUITES[name]
    script = benchmarks_dir() / suite.script
    if not script.is_file():
        raise InvalidArgumentError(f"suite {name!r} runs {script}, which is not in this "
                                   "checkout")
    return [sys.executable, str(script), *suite.args, *extra]


def run_benchmark(args: argparse.Namespace) -> int:
    command = suite_command(args.suite, args.args)
    print("running: " + " ".join(command[1:]), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=Path(command[1]).parents[1], check=False)
    if done.returncode == 0:
        return 0
    print(f"prune-gym benchmark: {args.suite} failed (exit code {done.returncode})",
          file=sys.stderr)
    return 2 if done.returncode == 2 else 1  # 2: the script refused its arguments
