"""``prune-gym``: the command line. Starts from the embedded task, so it needs no download."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from prune_gym.errors import PruneGymError


def _task_and_net(args):
    from prune_gym.network import PrunableNetwork, PruningWarning
    from prune_gym.tasks import make_task

    task = make_task(args.task)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PruningWarning)
        net = PrunableNetwork(task.model, task.example_inputs, importance=args.importance)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    return task, net


def _cmd_tasks(args) -> int:
    from prune_gym.tasks import _TASKS, list_tasks

    for name in list_tasks():
        print(f"{name:<24} {_TASKS[name].description}")
    return 0


def _cmd_describe(args) -> int:
    _, net = _task_and_net(args)
    print(net.describe())
    return 0


def _cmd_baselines(args) -> int:
    from agents.baselines import run_baselines
    from prune_gym.evaluate import Evaluator

    start = time.perf_counter()
    task, net = _task_and_net(args)
    budget = task.budget if args.budget is None else args.budget
    evaluator = Evaluator(task.val_data, max_samples=args.val_samples,
                          train_data=task.data.train.as_tuple(), batch_size=128,
                          bn_recalibration=args.bn_recalibration)
    test = Evaluator(task.data.test.as_tuple())
    results = run_baselines(net, evaluator, budget, args.constraint, trials=args.trials,
                            seed=args.seed)
    base_val = evaluator.evaluate(task.model).accuracy
    base_test = test.evaluate(task.model).accuracy
    print(f"task {task.name}: {len(net.groups)} prunable channel groups, "
          f"{net.base_macs:,} MACs, {net.base_params:,} params; budget {budget:.2f} of "
          f"{args.constraint}")
    header = f"{'method':<18} {'MACs kept':>9} {'params kept':>11} {'val acc':>8} {'test acc':>8}"
    print(header)
    print("-" * len(header))
    print(f"{'unpruned':<18} {1:>9.3f} {1:>11.3f} {base_val:>8.4f} {base_test:>8.4f}")
    rows = []
    for r in results:
        # the physically smaller model, BN-recalibrated like in selection, scored on test
        exported = net.export(r.keep)
        if args.bn_recalibration:
            evaluator.recalibrate(exported)  # the batches selection was scored with
        test_acc = test.evaluate(exported).accuracy
        rows.append({**r.as_dict(), "test_accuracy": test_acc})
        print(f"{r.method:<18} {r.macs_ratio:>9.3f} {r.params_ratio:>11.3f} "
              f"{r.val_accuracy:>8.4f} {test_acc:>8.4f}")
    print(f"({evaluator.evaluations} validation evaluations, "
          f"{time.perf_counter() - start:.1f} s; selection on validation, test reported only)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": task.name, "budget": budget, "constraint": args.constraint,
                       "unpruned": {"val_accuracy": base_val, "test_accuracy": base_test},
                       "results": rows}, f, indent=2)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prune-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the named tasks").set_defaults(fn=_cmd_tasks)
    for name, fn, text in (("describe", _cmd_describe, "show a task's channel groups"),
                           ("baselines", _cmd_baselines, "prune a task with the baselines")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--task", default="digits-cnn-v0")
        p.add_argument("--importance", default="l1")
        p.set_defaults(fn=fn)
        if name == "baselines":
            p.add_argument("--budget", type=float, default=None,
                           help="fraction of the metric to keep (default: the task's)")
            p.add_argument("--constraint", default="macs", choices=("macs", "params"))
            p.add_argument("--trials", type=int, default=20, help="random-search candidates")
            p.add_argument("--val-samples", type=int, default=None)
            p.add_argument("--bn-recalibration", type=int, default=4, metavar="K",
                           help="re-estimate BatchNorm on K training batches (0 = off)")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--json", default=None, help="also write the results here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except PruneGymError as exc:
        print(f"prune-gym: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
