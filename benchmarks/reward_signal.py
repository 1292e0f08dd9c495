"""Is the reward a signal? Accuracy of pruned states with and without BatchNorm recalibration.

Without recalibration, the BatchNorm statistics of a pruned network are the unpruned
network's, and many pruned states score near chance: the reward then says little about
which state is better. This script measures, per embedded task, at the task's budget:

* the spread of validation accuracy over random feasible keep states (scaled into the budget
  like the random-search baseline), and the rank correlation between the accuracy a state
  gets without recalibration and with it (how well the cheap reward orders states);
* the cost of one evaluation (median ms, cache off) with each setting;
* learning: PPO on ``LayerRatio-v0`` in AMC's project mode (every episode ends feasible, so
  the reward is the whole story), for each setting and seed; the final deterministic
  policy's state is then scored *with* recalibration, the common yardstick, and compared
  with the random states' median.

    python benchmarks/reward_signal.py            # writes benchmarks/results/reward_signal.*
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
from agents.baselines import _largest_scale, budget_limit  # noqa: E402
from prune_gym import PrunableNetwork  # noqa: E402
from prune_gym.evaluate import Evaluator  # noqa: E402
from prune_gym.tasks import list_tasks, make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("digits-cnn-v1", "digits-resnet-v1")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties broken by order; enough for continuous accuracies)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluator(task, batches: int) -> Evaluator:
    return Evaluator(task.val_data, train_data=task.data.train.as_tuple(),
                     bn_recalibration=batches, batch_size=64 if batches else 500,
                     cache_size=0)


def random_states(net: PrunableNetwork, budget: float, count: int, seed: int) -> list:
    limit = budget_limit(net, budget)
    rng = np.random.default_rng(seed)
    return [_largest_scale(net, rng.uniform(0.2, 1.0, len(net.groups)), limit, "macs")
            for _ in range(count)]


def learn(task, net, batches: int, seed: int, steps: int) -> dict:
    from stable_baselines3 import PPO

    env = gym.make("LayerRatio-v0", model=net, val_data=task.val_data,
                   train_data=task.data.train.as_tuple(), budget=task.budget,
                   constraint_mode="project", bn_recalibration=batches,
                   eval_batch_size=64 if batches else 500, seed=seed)
    agent = PPO("MultiInputPolicy", env, n_steps=128, batch_size=64, n_epochs=10,
                learning_rate=3e-4, policy_kwargs={"net_arch": [64, 64]}, seed=seed,
                device="cpu")
    start = time.perf_counter()
    agent.learn(steps)
    seconds = time.perf_counter() - start
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        action, _ = agent.predict(obs, deterministic=True)
        obs, reward, term, trunc, info = env.step(action)
        done = term or trunc
    keep = env.unwrapped.keep
    yardstick = evaluator(task, 4).evaluate_keep(net, keep).accuracy
    return {"final_reward": float(reward), "final_recalibrated": float(yardstick),
            "macs_ratio": info["macs_ratio"], "seconds": seconds}


def run(task_name: str, states: int, steps: int, seeds: int) -> dict:
    task = make_task(task_name)
    net = PrunableNetwork(task.model, task.example_inputs)
    keeps = random_states(net, task.budget, states, seed=0)
    row: dict = {"task": task_name, "groups": len(net.groups), "budget": task.budget,
                 "states": states}
    accs = {}
    for batches in (0, 4):
        ev = evaluator(task, batches)
        times, acc = [], []
        for keep in keeps:
            t0 = time.perf_counter()
            acc.append(ev.evaluate_keep(net, keep).accuracy)
            times.append(time.perf_counter() - t0)
        accs[batches] = np.array(acc)
        row[f"recal{batches}"] = {
            "median": float(np.median(acc)), "p10": float(np.percentile(acc, 10)),
            "p90": float(np.percentile(acc, 90)), "std": float(np.std(acc)),
            "eval_ms": 1e3 * statistics.median(times),
        }
    row["rank_correlation"] = spearman(accs[0], accs[4])
    for batches in (0, 4):
        runs = [learn(task, net, batches, seed, steps) for seed in range(seeds)]
        row[f"learn_recal{batches}"] = runs
    return row


def markdown(rows: list[dict], args, machine: str) -> str:
    lines = ["# Reward signal: BatchNorm recalibration on or off", "",
             f"`python benchmarks/reward_signal.py --states {args.states} --steps {args.steps} "
             f"--seeds {args.seeds}`", "", f"Machine: {machine}", "",
             "Random feasible states (scaled into the budget), validation accuracy:", "",
             "| task | groups | recalibration | median | p10 | p90 | std | ms / evaluation |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for b in (0, 4):
            s = r[f"recal{b}"]
            lines.append(f"| {r['task']} | {r['groups']} | {'4 batches of 64' if b else 'off'} "
                         f"| {s['median']:.3f} | {s['p10']:.3f} | {s['p90']:.3f} "
                         f"| {s['std']:.3f} | {s['eval_ms']:.1f} |")
    lines += ["", "Rank correlation of the two accuracies over the same states: " + ", ".join(
        f"{r['task']} {r['rank_correlation']:.2f}" for r in rows), "",
        f"PPO on LayerRatio-v0 (project mode), {args.steps} steps per run; the final "
        "deterministic state scored with recalibration (the yardstick) against the random "
        "states' median with recalibration:", "",
        "| task | trained with | final state, recalibrated (per seed) | random median | "
        "wall s (per seed) |", "|---|---|---|---|---|"]
    for r in rows:
        for b in (0, 4):
            runs = r[f"learn_recal{b}"]
            lines.append(
                f"| {r['task']} | recalibration {'on' if b else 'off'} | "
                + ", ".join(f"{x['final_recalibrated']:.3f}" for x in runs)
                + f" | {r['recal4']['median']:.3f} | "
                + ", ".join(f"{x['seconds']:.0f}" for x in runs) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--states", type=int, default=100)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tasks", nargs="*", default=[t for t in TASKS if t in list_tasks()])
    args = parser.parse_args()
    machine = describe_machine()
    rows = [run(t, args.states, args.steps, args.seeds) for t in args.tasks]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reward_signal.json").write_text(json.dumps(
        {"machine": machine, "args": vars(args), "rows": rows}, indent=1))
    text = markdown(rows, args, machine)
    (RESULTS / "reward_signal.md").write_text(text)
    print(text)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
