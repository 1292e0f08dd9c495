"""Policy benchmark: what the graph policies cost next to the evaluations they drive.

On ResNet-56 observations (``cifar10-resnet56-v0``; needs ``../shared/data``, else the
embedded ``digits-resnet-v1`` stands in and the table says so):

* one extractor forward on a batch of 64 observations (GAT, m-GNN), median of repeats;
* one PPO gradient step (forward + backward + Adam) of PPOLagrangian with each extractor on
  a minibatch of 64;
* the policy's share of wall time in a PPOLagrangian + GAT run on ``DNNGraph-v0`` (1,000
  validation images, BN recalibration as by default): everything but ``env.step`` (policy
  forwards while collecting, and the update), over whole rollouts. Goal: under 5 %: the
  evaluation forward should dominate.

    python benchmarks/policies.py            # writes benchmarks/results/policies.{md,json}
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
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

ROOT = Path(__file__).resolve().parents[1]
# first, always: run as a script, this folder leads sys.path, and its agents.py would
# shadow the agents package wherever the repository also sits further down the path
sys.path.insert(0, str(ROOT))

from machine_info import describe_machine  # noqa: E402 - beside this script

import prune_gym  # noqa: E402,F401 - registers the environments
from agents import GATExtractor, MultiStageGNNExtractor, PPOLagrangian  # noqa: E402
from prune_gym import PrunableNetwork  # noqa: E402
from prune_gym.tasks import make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = ROOT.parent / "shared" / "data"
EXTRACTORS = {"GAT": GATExtractor, "m-GNN": MultiStageGNNExtractor}


class StepTimer(VecEnvWrapper):
    """Accumulates the wall time spent inside the environments' ``step``."""

    def __init__(self, venv):
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions):
        self._start = time.perf_counter()
        self.venv.step_async(actions)

    def step_wait(self):
        out = self.venv.step_wait()
        self.seconds += time.perf_counter() - self._start
        return out


def load(args):
    if (SHARED / "cifar10-jpg.tar.gz").is_file() and not args.digits:
        task = make_task("cifar10-resnet56-v0", data_dir=str(SHARED), max_train=1000,
                         max_test=100)
    else:
        task = make_task("digits-resnet-v1")
    net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - analysed once, copied into every env
    return task, net


def observations(env: gym.Env, count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` observations of random states, batched as SB3 hands them to a policy."""
    env.action_space.seed(seed)
    out = []
    while len(out) < count:
        obs, _ = env.reset(seed=seed + len(out))
        done = False
        while not done and len(out) < count:
            out.append(obs)
            obs, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    return {k: torch.as_tensor(np.stack([o[k] for o in out])).float() for k in out[0]}


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def micro(env: gym.Env, repeats: int) -> dict:
    batch = observations(env, 64, seed=0)
    rows = {}
    for name, cls in EXTRACTORS.items():
        agent = PPOLagrangian("MultiInputPolicy", env, n_steps=64, batch_size=64, seed=0,
                              device="cpu", policy_kwargs={"features_extractor_class": cls})
        policy = agent.policy
        actions = torch.as_tensor(np.stack([env.action_space.sample() for _ in range(64)]))

        def forward(policy=policy):
            with torch.no_grad():
                policy.extract_features(batch, policy.features_extractor)

        def update(policy=policy, actions=actions):
            values, log_prob, entropy = policy.evaluate_actions(batch, actions)
            loss = -log_prob.mean() + values.pow(2).mean() - 0.01 * entropy.mean()
            policy.optimizer.zero_grad()
            loss.backward()
            policy.optimizer.step()

        rows[name] = {"forward_ms": median_ms(forward, repeats),
                      "update_ms": median_ms(update, repeats)}
    return rows


def share(task, net, steps: int) -> dict:
    def make():
        return gym.make("DNNGraph-v0", model=net, val_data=task.val_data,
                        train_data=task.data.train.as_tuple(), seed=0)

    venv = StepTimer(DummyVecEnv([make]))
    agent = PPOLagrangian("MultiInputPolicy", venv, n_steps=steps, batch_size=64, n_epochs=10,
                          seed=0, device="cpu", cost_key="signed_cost",
                          policy_kwargs={"features_extractor_class": GATExtractor})
    start = time.perf_counter()
    agent.learn(steps)
    total = time.perf_counter() - start
    return {"steps": steps, "wall_s": total, "env_s": venv.seconds,
            "policy_share": (total - venv.seconds) / total,
            "evaluations": venv.get_attr("evaluator")[0].evaluations}


def markdown(result: dict, args) -> str:
    lines = ["# Policy cost next to evaluation", "",
             f"`python benchmarks/policies.py --steps {args.steps}"
             + (" --digits`" if args.digits else "`"), "", f"Machine: {result['machine']}", "",
             f"Task: {result['task']} ({result['nodes']} nodes, {result['edges']} edges, "
             f"{result['groups']} groups), batch of 64 observations, median of "
             f"{args.repeats} repeats:", "",
             "| extractor | forward (ms) | PPO gradient step (ms) |", "|---|---|---|"]
    for name, row in result["micro"].items():
        lines.append(f"| {name} | {row['forward_ms']:.1f} | {row['update_ms']:.1f} |")
    s = result["share"]
    lines += ["", f"PPOLagrangian + GAT on DNNGraph-v0, {s['steps']} steps (one rollout and "
              f"its 10 epochs of updates), {s['evaluations']} evaluations of "
              f"{result['val_images']} validation images with BN recalibration: wall "
              f"{s['wall_s']:.1f} s, of which env.step {s['env_s']:.1f} s; the policy's "
              f"share is **{100 * s['policy_share']:.1f} %** (goal < 5 %)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--digits", action="store_true", help="use digits-resnet-v1")
    args = parser.parse_args()
    task, net = load(args)
    env = gym.make("DNNGraph-v0", model=net, val_data=task.val_data, eval_samples=10)
    topo = net.topology
    result = {"machine": describe_machine(), "task": task.name, "nodes": topo.num_nodes,
              "edges": topo.num_edges, "groups": len(net.groups),
              "val_images": len(task.val_data[1]), "micro": micro(env, args.repeats),
              "share": share(task, net, args.steps)}
    RESULTS.mkdir(exist_ok=True)
    suffix = "_digits" if args.digits else ""
    (RESULTS / f"policies{suffix}.json").write_text(json.dumps(result, indent=1))
    text = markdown(result, args)
    (RESULTS / f"policies{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
