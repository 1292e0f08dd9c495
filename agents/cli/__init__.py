"""``prune-gym``: the command line, a thin layer over :mod:`agents.methods`, :mod:`agents.results`
and the engine.

It lives in ``agents`` (not ``prune_gym``) because it runs agents, and the dependency stays
one way: ``prune_gym`` never imports ``agents``. One module per command group; each adds
its sub-commands with ``add_commands(subparsers)`` and implements them as functions of the
parsed arguments that return the exit code.

Exit codes (as CompilerGym's validator uses them): 0 success, 1 a check failed (``validate``
found a row that does not reproduce, or a benchmark script failed), 2 bad usage (unknown
names, values out of range, a run directory that cannot be used), 130 interrupted (Ctrl-C;
a search's run directory stays valid and ``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import sys

from agents.cli import benchmark, demo, export, finetune, latency, listing, search, validate
from prune_gym.errors import PruneGymError

__all__ = ["EXIT_FAILED_CHECK", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser",
           "main"]

EXIT_OK = 0
EXIT_FAILED_CHECK = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Prune CNNs with reinforcement-learning agents and baselines, then check, fine-tune and
export the result. Everything starts from the embedded task digits-cnn-v1, which needs no
download.

  prune-gym demo                          baselines and a graph agent at 50 % MACs, in minutes
  prune-gym search --agent uniform --budget 0.5 --out runs/u
  prune-gym validate runs/u/results.csv   replay every result and check it

Exit codes: 0 success, 1 a failed check, 2 bad usage, 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    """The ``prune-gym`` argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="prune-gym", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (listing, search, finetune, export, latency, validate, benchmark, demo):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``prune-gym`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.fn(args)
    except PruneGymError as exc:
        print(f"prune-gym {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        hint = getattr(args, "interrupt_hint", None)
        print(f"\nprune-gym {args.command}: interrupted"
              + (f"; {hint}" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
