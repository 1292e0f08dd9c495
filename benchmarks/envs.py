"""Environment benchmark: steps per second, step overhead, vector scaling, memory.

For the embedded digits task and for ResNet-56 on the CIFAR-10 JPEG set (1,000 validation
images; needs ``../shared/data``, skipped with a message otherwise), and for each of the
three environments:

* steps/s over whole episodes with seeded random actions (evaluation included);
* the median time of a non-evaluating step (pricing + observation);
* the ratio of a whole episode to the bare forward of the *exported, pruned* network of
  its final state over the same validation images (the physical limit; target <= 1.15 for
  ResNet-56 at budget 0.5), and beside it the old ratio: the evaluating step to the bare
  forward of the full-size working model; medians over episodes, interleaved;
* the same with BatchNorm recalibration (4 batches of 64): the episode against the
  forward passes it needs on the pruned network (calibration batches in train mode plus
  the validation images);
* vector-env scaling with everyone's defaults: 2 workers vs 1 worker (each worker one torch
  thread by prune_gym's worker rule), for SB3 ``SubprocVecEnv`` and Gymnasium's async
  ``make_vec``;
* resident memory after 1,000 and after 10,000 steps (digits task).

The evaluation cache is off for the timing runs so that every episode end really
evaluates. This is a benchmark, not a test: it takes minutes.

    python benchmarks/envs.py            # writes benchmarks/results/envs.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# first, always: run as a script, this folder leads sys.path, and its agents.py would
# shadow the agents package wherever the repository also sits further down the path
sys.path.insert(0, str(ROOT))

from machine_info import describe_machine  # noqa: E402 - beside this script

import prune_gym  # noqa: E402,F401 - registers the environments
from prune_gym import ENV_IDS, PrunableNetwork  # noqa: E402
from prune_gym.errors import TaskError  # noqa: E402
from prune_gym.network import PruningWarning  # noqa: E402
from prune_gym.tasks import make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared" / "data"


def rss_mib() -> float:
    """Current resident set size of this process."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_env(env_id: str, net: PrunableNetwork, val, **kw):
    return gym.make(env_id, model=net, val_data=val, **kw)


def episode(env, rng_seed: int) -> list[float]:
    """Step times of one seeded random episode; the last one evaluates."""
    env.reset(seed=rng_seed)
    env.action_space.seed(rng_seed)
    times, done = [], False
    while not done:
        action = env.action_space.sample()
        start = time.perf_counter()
        _, _, term, trunc, _ = env.step(action)
        times.append(time.perf_counter() - start)
        done = term or trunc
    return times


def _forward(model, x, batch: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            model(x[i:i + batch])
    return time.perf_counter() - start


def bare_forward(env) -> float:
    """One bare forward of the validation images through the full-size working model."""
    base = env.unwrapped
    return _forward(base.net.model, base.evaluator.x, base.evaluator.batch_size)


def pruned_forward(env) -> float:
    """The forward passes an evaluation of the current state needs, on the exported,
    physically pruned network: BatchNorm recalibration batches (train mode) if any, plus
    the validation images."""
    from prune_gym.evaluate import recalibrate_batchnorm

    base = env.unwrapped
    model = base.export().eval()
    ev = base.evaluator
    seconds = 0.0
    if ev.bn_recalibration:
        start = time.perf_counter()
        recalibrate_batchnorm(model, ev.train_x, ev.bn_batch_size)
        seconds += time.perf_counter() - start
    return seconds + _forward(model, ev.x, ev.batch_size)


def bench_env(env_id: str, net, val, repeats: int, min_seconds: float, **kw) -> dict:
    env = make_env(env_id, net, val, eval_cache=0, **kw)
    episode(env, 10_000)  # warm-up: first-call allocations, rankings, prefix tables
    bare_forward(env), pruned_forward(env)
    steps, elapsed, inner, old, new, finals, forwards, pruned = 0, 0.0, [], [], [], [], [], []
    seed = 0
    while seed < repeats or elapsed < min_seconds:
        times = episode(env, seed)
        fwd = bare_forward(env)  # interleaved: the same machine state as the episode
        pfwd = pruned_forward(env)
        steps += len(times)
        elapsed += sum(times)
        inner += times[:-1]
        finals.append(times[-1])
        forwards.append(fwd)
        pruned.append(pfwd)
        old.append(times[-1] / fwd)
        new.append(sum(times) / pfwd)
        seed += 1
    return {
        "env": env_id, "episodes": seed, "steps": steps,
        "steps_per_s": steps / elapsed,
        "inner_step_ms": 1000 * statistics.median(inner) if inner else float("nan"),
        "eval_step_s": statistics.median(finals), "bare_forward_s": statistics.median(forwards),
        "pruned_forward_s": statistics.median(pruned),
        "step_over_forward": statistics.median(old),
        "episode_over_pruned_forward": statistics.median(new),
        "physical_evaluations": env.unwrapped.evaluator.physical_evaluations,
        "evaluations": env.unwrapped.evaluator.evaluations,
    }


def _steps_per_s(venv, workers: int, seconds: float, sample) -> float:
    for _ in range(20):  # warm-up
        venv.step(sample())
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(sample())
        steps += workers
    return steps / (time.perf_counter() - start)


def vec_throughput(kind: str, env_id: str, net, val, workers: int, seconds: float,
                   constant: bool = False) -> float:
    """Steps/s of ``workers`` worker processes with the defaults a user types (prune_gym
    gives each worker one torch thread). ``constant``: every worker gets the same action,
    so every step costs the same in every worker (random actions give pruned networks of
    different sizes, and a synchronous vector env waits for the slower evaluation)."""
    def factory():
        import importlib

        importlib.import_module("prune_gym")
        return make_env(env_id, net, val, eval_cache=0)

    if kind == "sb3":
        from stable_baselines3.common.vec_env import SubprocVecEnv

        venv = SubprocVecEnv([factory] * workers)
        try:
            venv.seed(0)
            venv.action_space.seed(0)
            venv.reset()
            if constant:
                same = np.zeros((workers, *venv.action_space.shape), venv.action_space.dtype)
                return _steps_per_s(venv, workers, seconds, lambda: same)
            return _steps_per_s(venv, workers, seconds, lambda: np.stack(
                [venv.action_space.sample() for _ in range(workers)]))
        finally:
            venv.close()
    envs = gym.make_vec(env_id, num_envs=workers, vectorization_mode="async", model=net,
                        val_data=val, eval_cache=0)
    try:
        envs.reset(seed=0)
        envs.action_space.seed(0)
        if constant:
            same = np.zeros(envs.action_space.shape, envs.action_space.dtype)
            return _steps_per_s(envs, workers, seconds, lambda: same)
        return _steps_per_s(envs, workers, seconds, envs.action_space.sample)
    finally:
        envs.close()


def lockstep_limit(env_id: str, net, val, seconds: float, constant: bool = False) -> float:
    """The speed-up two lock-stepped workers could reach at best, without any IPC: two
    envs stepped in turn in this process on one torch thread, seeded as the vector envs
    seed their workers; sum of both workers' step times over the sum of the slower of each
    pair. Random actions give each worker a differently sized network, so this is below
    2.0; it is the denominator that the measured speed-up is held against."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        envs = [make_env(env_id, net, val, eval_cache=0) for _ in range(2)]
        for i, env in enumerate(envs):
            env.reset(seed=i)
            env.action_space.seed(i)
        total, slower, start = 0.0, 0.0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            pair = []
            for env in envs:
                action = env.action_space.sample()
                if constant:
                    action = np.zeros_like(action)
                t0 = time.perf_counter()
                _, _, term, trunc, _ = env.step(action)
                pair.append(time.perf_counter() - t0)
                if term or trunc:
                    env.reset()
            total += sum(pair)
            slower += max(pair)
        return total / slower
    finally:
        torch.set_num_threads(threads)


def memory(env_id: str, net, val) -> dict:
    env = make_env(env_id, net, val)
    env.action_space.seed(0)
    env.reset(seed=0)
    marks = {}
    for step in range(1, 10_001):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
        if step in (1_000, 10_000):
            marks[step] = rss_mib()
    return {"env": env_id, "rss_1k_mib": marks[1_000], "rss_10k_mib": marks[10_000]}


def load(task_name: str, **kw):
    task = make_task(task_name, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - built once; the envs' copies carry it
    return net, task


def _load(avg) -> str:
    return ", ".join(f"{v:.2f}" for v in avg)


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "envs.json").write_text(json.dumps(results, indent=2))
    lines = ["# Environment benchmark", "",
             f"Machine: {results['machine']}. Produced by `python benchmarks/envs.py` "
             "(seeded random actions; evaluation cache off, so every episode end evaluates; "
             "medians; episodes and bare forwards interleaved). Load average (1, 5, 15 min) "
             f"before: {_load(results['load_before'])}, after: {_load(results['load_after'])}"
             f" ({results.get('note', 'the VM is shared: other processes show in timings')}).",
             "", "## Steps per second and the physical limit", "",
             "Episode / pruned forward: a whole episode (every step, the evaluation included) "
             "against the bare forward of the exported, physically pruned network of its final "
             "state over the same images (with recalibration: plus its calibration batches in "
             "train mode); target <= 1.15 for ResNet-56 at budget 0.5. Eval step / full "
             "forward is the old ratio (against the full-size model's forward).", "",
             "| task | env | episodes | steps/s | non-evaluating step ms | evaluating step s "
             "| full forward s | pruned forward s | episode / pruned forward | eval step / full "
             "forward | physical evals |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, rows in results["envs"].items():
        for r in rows:
            lines.append(f"| {task} | {r['env']} | {r['episodes']} | {r['steps_per_s']:.1f} | "
                         f"{r['inner_step_ms']:.3f} | {r['eval_step_s']:.4f} | "
                         f"{r['bare_forward_s']:.4f} | {r['pruned_forward_s']:.4f} | "
                         f"{r['episode_over_pruned_forward']:.3f} | "
                         f"{r['step_over_forward']:.3f} | "
                         f"{r['physical_evaluations']}/{r['evaluations']} |")
    for task, note in results.get("skipped", {}).items():
        lines.append(f"\n{task} skipped: {note}")
    lines += ["", "The digits forward is a few milliseconds, so there the fixed cost of pricing, "
              "observation and scoring weighs more.", "",
              "## Vector envs with the defaults: 2 workers vs 1 worker", "",
              "Each worker uses one torch thread (prune_gym's worker rule), so 1 worker is one "
              "single-threaded worker; target for 2 workers on 2 cores: >= 1.8x. Random "
              "actions prune each worker's network to a different size, and both vector envs "
              "step their workers in lock-step, so each step waits for the slower evaluation; "
              "constant actions (the same state in every worker) measure the machinery "
              "itself. Lock-step limit: the best speed-up two lock-stepped workers could reach "
              "with no inter-process cost at all (two envs seeded as the workers, stepped in "
              "turn in one process on one thread: the sum of all step times over the sum of "
              "the slower step of each pair); 2.0 only when every pair of steps costs the "
              "same.", ""]
    if "vec_load_before" in results:
        lines += [f"This section was re-run on its own (`python benchmarks/envs.py --vec-only`, "
                  "OMP_NUM_THREADS unset, nothing else running); load average before: "
                  f"{_load(results['vec_load_before'])}, after: "
                  f"{_load(results['vec_load_after'])}.", ""]
    lines += ["| task | env | vector env | actions | 1 worker steps/s | 2 workers steps/s | "
              "speed-up | lock-step limit | speed-up / limit |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results["vec"]:
        speedup = r["w2"] / r["w1"]
        limit = r.get("lockstep_limit", float("nan"))
        lines.append(f"| {r['task']} | {r['env']} | {r['kind']} | "
                     f"{r.get('actions', 'random')} | {r['w1']:.1f} | "
                     f"{r['w2']:.1f} | {speedup:.2f} | {limit:.2f} | {speedup / limit:.2f} |")
    lines += ["", "## Resident memory (digits task, default evaluation cache)", "",
              "| env | RSS after 1,000 steps MiB | after 10,000 MiB | growth MiB |",
              "|---|---|---|---|"]
    for r in results["memory"]:
        lines.append(f"| {r['env']} | {r['rss_1k_mib']:.1f} | {r['rss_10k_mib']:.1f} | "
                     f"{r['rss_10k_mib'] - r['rss_1k_mib']:+.1f} |")
    (RESULTS / "envs.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="evaluating steps per env")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="least stepping time per env (digits: more episodes)")
    parser.add_argument("--vec-seconds", type=float, default=10.0)
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--note", default="the VM is shared: other processes show in timings")
    parser.add_argument("--rewrite", action="store_true",
                        help="only regenerate envs.md from the saved envs.json")
    parser.add_argument("--vec-only", action="store_true",
                        help="re-run only the vector-env section; keep the rest of envs.json")
    args = parser.parse_args()
    if args.rewrite:
        write(json.loads((RESULTS / "envs.json").read_text()))
        return

    results = {"machine": describe_machine(), "envs": {}, "vec": [], "memory": [], "skipped": {},
               "load_before": os.getloadavg(), "note": args.note}
    if args.vec_only:
        results = json.loads((RESULTS / "envs.json").read_text())
        results["vec"], results["vec_load_before"] = [], os.getloadavg()
    tasks = [("digits-cnn-v1", {})]
    if args.skip_resnet:
        results["skipped"]["cifar10-resnet56-v0"] = "--skip-resnet"
    elif not SHARED.is_dir():
        results["skipped"]["cifar10-resnet56-v0"] = f"{SHARED} is absent"
        print(f"ResNet-56 part skipped: reference data folder {SHARED} is absent")
    else:
        tasks.append(("cifar10-resnet56-v0",
                      {"data_dir": str(SHARED), "max_train": 256, "max_test": 100}))
    for name, kw in tasks:
        try:
            net, task = load(name, **kw)
        except TaskError as exc:
            results["skipped"][name] = str(exc)
            print(f"{name} skipped: {exc}")
            continue
        val = task.val_data
        print(f"{name}: {len(net.groups)} groups, {len(val[0])} validation images")
        rows = results["envs"].get(name, []) if args.vec_only else []
        configs = [] if args.vec_only else [("", {})]
        if name != "digits-cnn-v1" and not args.vec_only:
            configs.append((" +BN recal 4x64", {"bn_recalibration": 4,
                                                 "train_data": task.data.train.as_tuple()}))
        for label, extra in configs:
            for env_id in ENV_IDS:
                row = bench_env(env_id, net, val, args.repeats,
                                args.min_seconds if name == "digits-cnn-v1" else 0.0,
                                budget=0.5, **extra)
                row["env"] += label
                print(f"  {row}")
                rows.append(row)
        results["envs"][name] = rows
        vec_ids = ENV_IDS if name == "digits-cnn-v1" else ("LayerRatio-v0",)
        for env_id in vec_ids:
            seconds = args.vec_seconds * (1 if name == "digits-cnn-v1" else 3)
            actions = ("random", "constant")
            for kind in ("sb3", "gym-async"):
                for action in actions:
                    same = action == "constant"
                    w1 = vec_throughput(kind, env_id, net, val, 1, seconds, same)
                    w2 = vec_throughput(kind, env_id, net, val, 2, seconds, same)
                    limit = lockstep_limit(env_id, net, val, seconds, same)
                    results["vec"].append({"task": name, "env": env_id, "kind": kind,
                                           "actions": action, "w1": w1, "w2": w2,
                                           "lockstep_limit": limit})
                    print(f"  {kind} {env_id} {action}: 1 worker {w1:.1f}/s, "
                          f"2 workers {w2:.1f}/s, lock-step limit {limit:.2f}x")
        if name == "digits-cnn-v1" and not (args.skip_memory or args.vec_only):
            for env_id in ENV_IDS:
                results["memory"].append(memory(env_id, net, val))
                print(f"  memory {results['memory'][-1]}")
    results["vec_load_after" if args.vec_only else "load_after"] = os.getloadavg()
    write(results)
    print(f"wrote {RESULTS / 'envs.md'}")


if __name__ == "__main__":
    main()
