"""One policy for any network: train a GraphPolicy on an embedded digits network, act on
CIFAR-10 ResNet-20 zero-shot.

PPOLagrangian with :class:`agents.GraphPolicy` (GAT node embeddings, a ratio per group
read from the group's nodes) and the presets' multiplier learns ``DNNGraph-v0`` at budget
0.5 of MACs on a source task; every env is observed with the same ``max_nodes``/
``max_edges``/``max_groups``, so the trained policy acts on ResNet-20 (needs
``../shared/data``) without seeing it. Beside it, on ResNet-20 at the same budget: the
policy before training (same initialisation: what transfer adds), random actions (mean over
episodes) and the uniform baseline, all evaluated alike (1,000 validation images held out of
the training split, BatchNorm recalibrated as by default).

    python benchmarks/transfer.py            # writes benchmarks/results/transfer.{md,json}
"""

from __future__ import annotations

import argparse
import json
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
from agents import GraphPolicy, PPOLagrangian  # noqa: E402
from agents.baselines import uniform  # noqa: E402
from agents.train import PRESETS  # noqa: E402
from prune_gym import PrunableNetwork  # noqa: E402
from prune_gym.tasks import make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared" / "data"
BUDGET = 0.5


def analysed(task) -> PrunableNetwork:
    net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - analysed once, copied into every env
    return net


def env_on(task, net, sizes: dict, seed: int = 0) -> gym.Env:
    return gym.make("DNNGraph-v0", model=net, val_data=task.val_data,
                    train_data=task.data.train.as_tuple(), budget=BUDGET, seed=seed, **sizes)


def episode(env: gym.Env, act, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        obs, _, term, trunc, info = env.step(act(obs))
        done = term or trunc
    return {"accuracy": info["accuracy"], "macs_ratio": info["macs_ratio"],
            "feasible": info["feasible"], "steps": info["step"]}


def policy_act(agent):
    return lambda obs: agent.predict(obs, deterministic=True)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", nargs="*", default=["digits-cnn-v1", "digits-resnet-v1"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--random-episodes", type=int, default=10)
    args = parser.parse_args()
    if not (SHARED / "cifar10-jpg.tar.gz").is_file():
        sys.exit(f"needs {SHARED}/cifar10-jpg.tar.gz and the ResNet-20 checkpoint")
    target = make_task("cifar10-resnet20-v0", data_dir=str(SHARED), max_train=2000,
                       max_test=100)
    target_net = analysed(target)
    sources = {name: make_task(name) for name in args.sources}
    nets = {name: analysed(task) for name, task in sources.items()}
    every = [target_net, *nets.values()]
    sizes = {"max_nodes": max(n.topology.num_nodes for n in every),
             "max_edges": max(n.topology.num_edges for n in every),
             "max_groups": max(len(n.groups) for n in every)}
    target_env = env_on(target, target_net, sizes)
    preset = PRESETS["gnnrl"].algo_kwargs
    settling = {k: preset[k] for k in ("cost_key", "cost_limit", "lagrangian",
                                       "lagrangian_kwargs", "normalize_cost_advantage")}
    rows = []
    rng = np.random.default_rng(0)
    random_runs = [episode(target_env, lambda obs: rng.uniform(-1, 1, sizes["max_groups"])
                           .astype(np.float32), seed=i) for i in range(args.random_episodes)]
    keep = uniform(target_net, BUDGET)
    uni = target_env.unwrapped.evaluate_state(keep)
    for name, task in sources.items():
        source_env = env_on(task, nets[name], sizes)
        agent = PPOLagrangian(GraphPolicy, source_env, n_steps=100, batch_size=50, n_epochs=10,
                              seed=0, device="cpu", **settling)
        before = episode(target_env, policy_act(agent), seed=0)
        start = time.perf_counter()
        agent.learn(args.steps)
        seconds = time.perf_counter() - start
        on_source = episode(source_env, policy_act(agent), seed=0)
        after = episode(target_env, policy_act(agent), seed=0)
        rows.append({"source": name, "train_steps": args.steps, "train_s": seconds,
                     "source_final": on_source, "target_untrained": before,
                     "target_zero_shot": after,
                     "lambda": float(agent.lagrange_multiplier)})
    result = {"machine": describe_machine(), "target": target.name, "budget": BUDGET,
              "sizes": sizes, "target_groups": len(target_net.groups),
              "uniform": {"accuracy": uni, "macs_ratio": target_net.macs(keep)
                          / target_net.base_macs},
              "random": {"accuracy_mean": float(np.mean([r["accuracy"] for r in random_runs])),
                         "feasible": float(np.mean([r["feasible"] for r in random_runs])),
                         "macs_ratio_mean": float(np.mean([r["macs_ratio"]
                                                           for r in random_runs]))},
              "rows": rows, "args": vars(args)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transfer.json").write_text(json.dumps(result, indent=1))
    text = markdown(result, args)
    (RESULTS / "transfer.md").write_text(text)
    print(text)


def markdown(r: dict, args) -> str:
    def cell(x: dict) -> str:
        return (f"{x['accuracy']:.3f} at {x['macs_ratio']:.3f} of MACs"
                f"{'' if x['feasible'] else ' (infeasible)'}")

    lines = ["# Zero-shot transfer of a GraphPolicy to CIFAR-10 ResNet-20", "",
             f"`python benchmarks/transfer.py --steps {args.steps}`", "",
             f"Machine: {r['machine']}", "",
             f"DNNGraph-v0 at budget {r['budget']} of MACs; every env padded to {r['sizes']}; "
             f"ResNet-20 has {r['target_groups']} prunable groups. Validation accuracy "
             "(1,000 images held out of train, BN recalibrated); the reference top-1 of "
             "ResNet-20 on this JPEG export is about 0.81-0.85.", "",
             "| policy | on ResNet-20 |", "|---|---|",
             f"| uniform baseline | {r['uniform']['accuracy']:.3f} at "
             f"{r['uniform']['macs_ratio']:.3f} of MACs |",
             f"| random actions (mean of {args.random_episodes} episodes) | "
             f"{r['random']['accuracy_mean']:.3f} at {r['random']['macs_ratio_mean']:.3f}, "
             f"{100 * r['random']['feasible']:.0f} % feasible |"]
    for row in r["rows"]:
        lines.append(f"| GraphPolicy untrained (the {row['source']} run's initialisation) | "
                     f"{cell(row['target_untrained'])} |")
        lines.append(f"| GraphPolicy trained {row['train_steps']} steps on {row['source']} "
                     f"({row['train_s']:.0f} s; there: {cell(row['source_final'])}) | "
                     f"{cell(row['target_zero_shot'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
