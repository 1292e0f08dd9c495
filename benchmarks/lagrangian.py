"""Does the multiplier settle, and do the final states end near the budget (not far under)?

PPOLagrangian on ``LayerRatio-v0`` (cmdp mode: nothing stops the agent from over- or
under-pruning) on the embedded ``digits-resnet-v1`` at budget 0.5, for each multiplier
rule, driven by two constraint signals:

* ``signed_cost`` (``metric / limit - 1`` at the end of an episode, negative under budget),
  against a limit of 0: the signal the presets use. lambda rises while episodes end over
  budget and falls while they end under it.
* ``cost`` (``max(0, metric / limit - 1)``), against a limit of 0: lambda can only grow,
  so an agent that prunes far past the budget is never told to stop.

Per run: lambda at the end of each rollout, and the metric ratio of the episodes of the
last quarter of training (median, and the fraction feasible).

    python benchmarks/lagrangian.py            # writes benchmarks/results/lagrangian.{md,json}
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

ROOT = Path(__file__).resolve().parents[1]
# first, always: run as a script, this folder leads sys.path, and its agents.py would
# shadow the agents package wherever the repository also sits further down the path
sys.path.insert(0, str(ROOT))

from machine_info import describe_machine  # noqa: E402 - beside this script

import prune_gym  # noqa: E402,F401 - registers the environments
from agents import PPOLagrangian  # noqa: E402
from prune_gym import PrunableNetwork  # noqa: E402
from prune_gym.tasks import make_task  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


class Trace(BaseCallback):
    """lambda after every rollout; the final metric ratio of every episode."""

    def __init__(self):
        super().__init__()
        self.lambdas: list[float] = []
        self.ratios: list[float] = []
        self.feasible: list[bool] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                self.ratios.append(float(info["macs_ratio"]))
                self.feasible.append(bool(info["feasible"]))
        return True

    def _on_rollout_start(self) -> None:
        if self.num_timesteps:
            self.lambdas.append(float(self.model.lagrange_multiplier))


# multiplier settings compared: OmniSafe's defaults (tuned for long safe-RL runs) and gains
# scaled to a pruning search, where a few dozen rollouts must settle lambda
SETTINGS = {
    "gradient (OmniSafe: Adam lr 0.035), A_c centred": ("gradient", {}, {}),
    "pid (OmniSafe: Kp 0.1, Ki 0.01, Kd 0.01, EMA 0.95), A_c centred": ("pid", {}, {}),
    "gradient (Adam lr 0.3), A_c standardised": (
        "gradient", {"lr": 0.3}, {"normalize_cost_advantage": True}),
    "pid (Kp 2, Ki 0.1, Kd 0, no EMA), A_c standardised (the presets')": (
        "pid", {"kp": 2.0, "ki": 0.1, "kd": 0.0, "ema": 0.0},
        {"normalize_cost_advantage": True}),
}


def load():
    task = make_task("digits-resnet-v1")
    net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - analysed once, copied into every env
    return task, net


def run(setting: str, key: str, steps: int, seed: int) -> dict:
    """One training run (in a worker process when ``--jobs`` > 1)."""
    task, net = load()
    rule, kwargs, algo_kwargs = SETTINGS[setting]
    env = gym.make("LayerRatio-v0", model=net, val_data=task.val_data,
                   train_data=task.data.train.as_tuple(), budget=task.budget, seed=seed)
    agent = PPOLagrangian("MultiInputPolicy", env, n_steps=240, batch_size=60, n_epochs=10,
                          cost_key=key, cost_limit=0.0, lagrangian=rule,
                          lagrangian_kwargs=kwargs, seed=seed, **algo_kwargs,
                          device="cpu", policy_kwargs={"net_arch": [64, 64]})
    trace = Trace()
    agent.learn(steps, callback=trace)
    trace.lambdas.append(float(agent.lagrange_multiplier))
    tail = len(trace.ratios) * 3 // 4
    ratios = np.array(trace.ratios[tail:])
    return {"rule": setting, "signal": key, "seed": seed, "lambdas": trace.lambdas,
            "episodes": len(trace.ratios), "final_median_ratio": float(np.median(ratios)),
            "final_p10_ratio": float(np.percentile(ratios, 10)),
            "final_p90_ratio": float(np.percentile(ratios, 90)),
            "final_feasible": float(np.mean(trace.feasible[tail:])),
            "first_median_ratio": float(np.median(trace.ratios[: max(1, tail // 3)]))}


def markdown(rows: list[dict], args, machine: str, budget: float) -> str:
    lines = ["# Does the Lagrange multiplier settle near the budget?", "",
             f"`python benchmarks/lagrangian.py --steps {args.steps} --seeds {args.seeds} "
             f"--jobs {args.jobs}` (all settings, both signals)", "",
             f"Machine: {machine}", "",
             f"PPOLagrangian on LayerRatio-v0 (cmdp), digits-resnet-v1, budget {budget} of "
             f"MACs, {args.steps} steps per run. Ratios are MACs kept / original, over the "
             "episodes of the last quarter of training (first: the first twelfth).", "",
             "| multiplier | signal | seed | lambda: after rollout 1, mid, end | ratio first | "
             "ratio last (p10 / median / p90) | feasible last |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lam = r["lambdas"]
        lines.append(f"| {r['rule']} | `{r['signal']}` | {r['seed']} | {lam[0]:.3f}, "
                     f"{lam[len(lam) // 2]:.3f}, {lam[-1]:.3f} | {r['first_median_ratio']:.3f} "
                     f"| {r['final_p10_ratio']:.3f} / {r['final_median_ratio']:.3f} / "
                     f"{r['final_p90_ratio']:.3f} | {r['final_feasible']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=7200)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--signals", nargs="*", default=["signed_cost", "cost"])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    args = parser.parse_args()
    grid = [(setting, key, args.steps, seed) for seed in range(args.seeds)
            for setting in args.settings for key in args.signals]
    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            rows = list(pool.map(run, *zip(*grid)))
    else:
        rows = [run(*cell) for cell in grid]
    task = make_task("digits-resnet-v1")
    machine = describe_machine()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lagrangian.json").write_text(json.dumps(
        {"machine": machine, "args": vars(args), "rows": rows}, indent=1))
    text = markdown(rows, args, machine, task.budget)
    (RESULTS / "lagrangian.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
