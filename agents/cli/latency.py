"""``latency-model``: measure a task network's latency on this machine, for
``--constraint latency`` (:mod:`prune_gym.latency_model`)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from agents.cli.common import add_task_option, load_task, positive_int


def add_commands(sub) -> None:
    p = sub.add_parser(
        "latency-model", help="fit a task network's CPU latency model (for --constraint latency)",
        description="Time exported keep states of the task's network on this machine, from "
        "one channel per group to the full network, and fit the latency model that "
        "'search --constraint latency --latency-model FILE' prices budgets with. It holds for "
        "this machine, batch size and thread count; its leave-one-out error is printed and "
        "saved with it. About a minute for ResNet-56 at batch 64; run it on a quiet machine.")
    add_task_option(p)
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the model (JSON)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="the batch size the latency is for (default 64)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads while timing (default 1)")
    p.add_argument("--states", type=positive_int, default=32,
                   help="keep states timed (default 32, at least 6)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="timed samples per state (default 5)")
    p.add_argument("--runtime", default="eager", choices=("eager", "torchscript", "onnx"),
                   help="how the exported model runs: eager PyTorch (default), TorchScript, "
                   "or ONNX Runtime (needs the onnx extra); model the one you deploy")
    p.add_argument("--round-to", type=positive_int, default=None, metavar="M",
                   help="fit on keep states rounded to multiples of M, for searches with "
                   "--round-to M (needed for ONNX Runtime, whose kernels slow down at other "
                   "widths)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=run_latency_model)


def run_latency_model(args: argparse.Namespace) -> int:
    from prune_gym.latency_model import fit_latency_model

    out = Path(args.out)
    if out.parent and not out.parent.is_dir():
        from prune_gym.errors import InvalidArgumentError

        raise InvalidArgumentError(f"--out {str(out)!r}: folder {str(out.parent)!r} does not "
                                   "exist")
    task = load_task(args.task)
    net = task.network()
    start = time.perf_counter()
    model = fit_latency_model(net, batch_size=args.batch_size, threads=args.threads,
                              states=args.states, rounds=args.rounds, runtime=args.runtime,
                              round_to=args.round_to, seed=args.seed, progress=True)
    model.save(out)
    fit = model.fit
    print(f"{task.name}: {model.base_s * 1e3:.1f} ms per forward ({model.runtime}) at batch "
          f"{model.batch_size} with {model.threads} thread(s); fitted on {fit['states']} keep "
          f"states in {time.perf_counter() - start:.0f} s")
    print(f"fit: R^2 {fit['r2']:.3f}; leave-one-out error, as a fraction of the full "
          f"network's latency: mean {fit['loo_mean_abs_error']:.3f}, max "
          f"{fit['loo_max_abs_error']:.3f}")
    print(f"written to {out}; use it with: prune-gym search --task {task.name} --constraint "
          f"latency --latency-model {out} ...")
    return 0
