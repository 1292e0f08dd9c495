"""Grow a task's table of evaluated keep states (``prune_gym/surrogate/tables/``), resumably.

Row ``i`` of a table is drawn by sampler ``MIXTURE[i % len(MIXTURE)]`` from a generator seeded
with ``(TABLE_SEED, i)``, and every second block of ``len(MIXTURE)`` rows has its kept counts
rounded to multiples of 8 (``round_to=8``; not the channel-index states). So a table is the
same rows on any machine, an interrupted run goes on at the next index, and anyone with more
compute extends it with a larger ``--states``. The mixture covers what agents visit:

- ``uniform``: one kept fraction for every group, at a target MACs ratio ~ U(0.1, 1);
- ``random-search``: random search's sampler (per-group fractions ~ U(0.2, 1), scaled to the
  largest state within the target);
- ``global-magnitude``: the globally least important channels dropped to the target;
- ``layer-ratio-random``, ``dnn-graph-random``: the final states of random-policy episodes of
  LayerRatio-v0 and DNNGraph-v0 (cmdp mode, budget = the target);
- ``channel-mask-random``: ChannelMask-v0 episodes with each bit kept with probability
  p ~ U(0.15, 1) (its uniform random policy is p = 0.5): channel-index states;
- ``perturb-heuristic``: uniform or global-magnitude states with every count multiplied by
  exp(N(0, s)), s in {0.05, 0.15, 0.3};
- ``perturb-agent``: the same around the best states the agents benchmark found on this
  network (``benchmarks/results/agents_cells``), or around the heuristics when it has none.

Each state is scored as the environments score an episode's end (``agents.methods.
make_evaluator``: the task's validation split, BatchNorm recalibrated on 4 x 64 training
images), and on the first ``--test-samples`` images of the test split the same way.

    python benchmarks/state_tables.py --task digits-cnn-v1 --states 10000
    PRUNE_GYM_DATA=../shared/data python benchmarks/state_tables.py \
        --task cifar10-resnet20-v2 --states 10000
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine_info import describe_machine  # noqa: E402 - beside this script

from agents import baselines  # noqa: E402
from agents.methods import make_evaluator, make_network  # noqa: E402
from prune_gym.evaluate import Evaluator  # noqa: E402
from prune_gym.keep import round_counts  # noqa: E402
from prune_gym.surrogate.table import (  # noqa: E402
    FORMAT,
    file_sha256,
    format_row,
    header,
    pack_masks,
    table_paths,
)
from prune_gym.tasks import make_task  # noqa: E402

TABLE_SEED = 20261208
MIXTURE = ("uniform", "random-search", "random-search", "global-magnitude",
           "layer-ratio-random", "dnn-graph-random", "channel-mask-random",
           "perturb-heuristic", "perturb-heuristic", "perturb-agent")
ROUND_TO = 8
CELLS = ROOT / "benchmarks" / "results" / "agents_cells"
# Tasks whose network is another task's (same weights): the agents' states carry over.
SAME_NETWORK = {"cifar10-resnet20-v2": ("cifar10-resnet20-v0",),
                "cifar10-resnet56-v2": ("cifar10-resnet56-v0",)}


def agent_states(task: str, groups: int) -> list[list[int]]:
    """Kept counts of the agents benchmark's best states on ``task``'s network. Read once,
    when a table is started, and kept in its manifest: the rows drawn around them must not
    change when the benchmark is re-run."""
    names = (task, *SAME_NETWORK.get(task, ()))
    states = []
    for folder in sorted(CELLS.glob("*@*")):
        if folder.name.split("@")[0] not in names:
            continue
        for cell in sorted(folder.glob("*.json")):
            keep = json.loads(cell.read_text()).get("keep")
            if isinstance(keep, list) and len(keep) == groups:
                states.append([len(k) if isinstance(k, list) else int(k) for k in keep])
    return states


class Sampler:
    """Draws row ``i``'s keep state: ``(source, counts or index lists, rounded, target)``."""

    def __init__(self, task, net, agent_states: list[list[int]]):
        self.task, self.net = task.name, net
        self.example = task.example_inputs
        self.sizes = np.array([g.size for g in net.groups])
        self.floor = net.min_ratio("macs")
        self.agent_states = agent_states



    def _target(self, rng: np.random.Generator, rounded: bool) -> float:
        low = self.floor
        if rounded:
            low = self.net.macs(round_counts(np.ones(len(self.sizes), int), self.sizes,
                                             ROUND_TO).tolist()) / self.net.base_macs
        low = max(0.1, low * 1.02)
        return float(rng.uniform(low, 1.0)) if low < 1.0 else 1.0

    def _round(self, counts, rounded: bool) -> list[int]:
        counts = np.clip(np.asarray(counts, dtype=int), 1, self.sizes)
        return (round_counts(counts, self.sizes, ROUND_TO) if rounded else counts).tolist()

    def _heuristic(self, rng, target: float, rounded: bool) -> list[int]:
        fn = baselines.uniform if rng.random() < 0.5 else baselines.global_magnitude
        return fn(self.net, target, round_to=ROUND_TO if rounded else None)

    def _perturbed(self, rng, base: list[int], rounded: bool) -> list[int]:
        scale = float(rng.choice([0.05, 0.15, 0.3]))
        counts = np.floor(np.asarray(base) * np.exp(rng.normal(0.0, scale, len(base))) + 0.5)
        return self._round(counts, rounded)

    def _episode(self, env_id: str, rng, target: float):
        """The final state of one random-policy episode (a private copy of the network; the
        env's evaluation is stubbed out: the table scores the state itself)."""
        env = gym.make(env_id, model=self.net, evaluate=lambda m: 0.0, budget=target,
                       example_inputs=self.example).unwrapped
        env.action_space.seed(int(rng.integers(2**31)))
        env.reset(seed=int(rng.integers(2**31)))
        p = float(rng.uniform(0.15, 1.0))
        done = False
        while not done:
            if env_id == "ChannelMask-v0":
                action = (rng.random(env.action_space.n) < p).astype(np.int8)
            else:
                action = env.action_space.sample()
            _, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        keep = env.keep_state()
        env.close()
        return keep

    def draw(self, index: int):
        rng = np.random.default_rng([TABLE_SEED, index])
        source = MIXTURE[index % len(MIXTURE)]
        rounded = (index // len(MIXTURE)) % 2 == 1 and source != "channel-mask-random"
        target = self._target(rng, rounded)
        limit = math.floor(target * self.net.base_macs)
        if source == "uniform":
            keep = baselines.uniform(self.net, target, round_to=ROUND_TO if rounded else None)
        elif source == "global-magnitude":
            keep = baselines.global_magnitude(self.net, target,
                                              round_to=ROUND_TO if rounded else None)
        elif source == "random-search":
            keep = baselines._largest_scale(self.net, rng.uniform(0.2, 1.0, len(self.sizes)),
                                            limit, "macs",
                                            round_to=ROUND_TO if rounded else None)
        elif source in ("layer-ratio-random", "dnn-graph-random"):
            env_id = "LayerRatio-v0" if source == "layer-ratio-random" else "DNNGraph-v0"
            keep = self._round(self._episode(env_id, rng, target), rounded)
        elif source == "channel-mask-random":
            keep = [list(map(int, k)) for k in self._episode("ChannelMask-v0", rng, target)]
        elif source == "perturb-agent" and self.agent_states:
            base = self.agent_states[int(rng.integers(len(self.agent_states)))]
            keep = self._perturbed(rng, base, rounded)
        else:  # perturb-heuristic, or perturb-agent on a network no agent has searched yet
            keep = self._perturbed(rng, self._heuristic(rng, target, rounded), rounded)
        return source, keep, rounded, target


def _existing_rows(path: Path, columns: list[str]) -> int:
    """Rows already in the CSV; a partial last line (an interrupted write) is cut off."""
    if not path.is_file():
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(columns)
        return 0
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if lines and lines[0].rstrip("\r\n").split(",") != columns:
        raise SystemExit(f"{path}: its header is not this network's table header")
    good = [lines[0]] + [ln for ln in lines[1:] if ln.endswith("\n")
                         and len(next(csv.reader([ln]))) == len(columns)]
    if len(good) != len(lines):
        path.write_text("".join(good))
    return len(good) - 1


def write_manifest(path: Path, csv_path: Path, task, net, evaluator, test_evaluator,
                   bases: list[list[int]], rows: int, started: str, seconds: float) -> None:
    """The manifest, with this invocation's entry in ``runs`` (one per invocation)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    runs = [r for r in old.get("runs", []) if r.get("started") != started]
    command = "python benchmarks/state_tables.py " + " ".join(sys.argv[1:])
    runs.append({"command": command, "machine": describe_machine(), "started": started,
                 "rows_after": rows, "wall_time_s": round(seconds, 1)})
    manifest = {
        "format": FORMAT,
        "task": task.name,
        "table_version": 0,
        "rows": rows,
        "sha256": file_sha256(csv_path),
        "groups": [[g.name, g.size] for g in net.groups],
        "base_macs": net.base_macs,
        "base_params": net.base_params,
        "importance": net.importance,
        "evaluator": {"val_samples": len(evaluator.y), "bn_recalibration":
                      evaluator.bn_recalibration, "bn_batch_size": evaluator.bn_batch_size,
                      "test_samples": len(test_evaluator.y)},
        "sampling": {"seed": TABLE_SEED, "mixture": list(MIXTURE), "round_to": ROUND_TO,
                     "rounded": "every second block of len(mixture) rows, except "
                                "channel-mask-random", "doc": "benchmarks/state_tables.py",
                     "perturb_agent_bases": bases},
        "columns": "see prune_gym/surrogate/table.py",
        "runs": runs,
    }
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--states", type=int, required=True, help="rows the table should hold")
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="tables folder (default: the "
                        "package's prune_gym/surrogate/tables)")
    parser.add_argument("--flush-every", type=int, default=50,
                        help="rows between manifest updates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = make_task(args.task)
    net = make_network(task)
    evaluator = make_evaluator(task)
    test_x, test_y = task.data.test.as_tuple()
    test_evaluator = Evaluator((test_x[:args.test_samples], test_y[:args.test_samples]),
                               train_data=task.data.train.as_tuple(),
                               bn_recalibration=evaluator.bn_recalibration,
                               bn_batch_size=evaluator.bn_batch_size)
    csv_path, manifest_path = table_paths(task.name, args.out)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    columns = header(len(net.groups))
    done = _existing_rows(csv_path, columns)
    if manifest_path.is_file():
        bases = json.loads(manifest_path.read_text())["sampling"]["perturb_agent_bases"]
    else:
        bases = agent_states(task.name, len(net.groups))
    sampler = Sampler(task, net, bases)
    start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f" pid {os.getpid()}"
    print(f"{task.name}: {done} rows present, growing to {args.states}", flush=True)
    # SIGTERM and SIGHUP stop the run as Ctrl-C does: the rows written so far are kept and
    # the manifest is brought up to them, so the table is whole at every stop
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    n = done
    try:
        with csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            for index in range(done, args.states):
                t0 = time.perf_counter()
                source, keep, rounded, target = sampler.draw(index)
                val = evaluator.evaluate_keep(net, keep)
                test = test_evaluator.evaluate_keep(net, keep)
                macs, params = net.price(keep)
                indexed = isinstance(keep[0], list)
                record = {"index": index, "source": source, "rounded": int(rounded),
                          "target": target, "macs": macs, "params": params,
                          "macs_ratio": macs / net.base_macs,
                          "params_ratio": params / net.base_params,
                          "val_accuracy": val.accuracy, "val_loss": val.loss,
                          "test_accuracy": test.accuracy, "test_loss": test.loss,
                          "seconds": time.perf_counter() - t0,
                          **{f"k{i}": len(k) if indexed else k for i, k in enumerate(keep)},
                          "mask": pack_masks(net.masks(keep)) if indexed else ""}
                writer.writerow(format_row(record, len(net.groups)))
                f.flush()
                n = index + 1
                if n % args.flush_every == 0:
                    write_manifest(manifest_path, csv_path, task, net, evaluator,
                                   test_evaluator, bases, n, started,
                                   time.perf_counter() - start)
                    print(f"{task.name}: {n} rows ({record['seconds']:.2f} s/state last)",
                          flush=True)
    except KeyboardInterrupt:
        print(f"{task.name}: stopped at {n} rows", flush=True)
    finally:
        write_manifest(manifest_path, csv_path, task, net, evaluator, test_evaluator, bases,
                       _existing_rows(csv_path, columns), started, time.perf_counter() - start)

if __name__ == "__main__":
    main()
