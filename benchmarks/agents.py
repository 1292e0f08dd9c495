"""Does a learned pruning agent beat the heuristics at the same number of evaluations?

Every method of :mod:`agents.methods` (and a graph policy transferred zero-shot from
another network) prunes each task to its budget with the same budget of validation
evaluations, for several seeds; the best feasible state of each run is then scored on the
test split, and again after one short knowledge-distillation fine-tune that every method
gets alike (:func:`prune_gym.finetune.distill`, teacher = the unpruned model).

The grid is run cell by cell (task x budget x method x seed); each cell is saved as it
finishes under ``benchmarks/results/agents_cells/``, so an interrupted run goes on where it
stopped and a grid can be filled over several sessions. ``--report`` (implied at the end of
a run) aggregates the cells into ``benchmarks/results/agents.{md,csv,png}``; the CSV has one
row per cell in the ``results.csv`` schema, so ``prune-gym validate`` replays it.

    python benchmarks/agents.py                                  # the default grid
    python benchmarks/agents.py --configs cifar10-resnet20-v0@0.5 --seeds 3 --evaluations 100
    python benchmarks/agents.py --report                         # tables from saved cells
    python benchmarks/agents.py --ray                            # cells as Ray tasks

``--ray`` runs the cells as Ray tasks (``pip install "prune-gym[ray]"``): a local cluster
of ``--ray-cpus`` CPUs (default all), or the running one at ``--ray-address``, one cell per
``--threads`` CPUs. Cells are saved as they finish, exactly as without it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# first, always: run as a script, this folder leads sys.path, and its agents.py would
# shadow the agents package wherever the repository also sits further down the path
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine_info import describe_machine  # noqa: E402 - beside this script

from agents.methods import make_evaluator, make_network, method_names, run_method  # noqa: E402
from agents.results import mean_std  # noqa: E402
from prune_gym.errors import InvalidArgumentError  # noqa: E402
from prune_gym.evaluate import Evaluator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "agents_cells"
DEFAULT_CONFIGS = ("digits-cnn-v1@0.5", "digits-resnet-v1@0.5", "cifar10-resnet20-v2@0.5",
                   "cifar10-resnet20-v2@0.3", "cifar10-resnet56-v2@0.5")
TRANSFER = "gat-transfer"
# the goal's two sides: graph-policy agents against the non-learning baselines
GRAPH_AGENTS = ("ppo-lagrangian-gat", "ppo-lagrangian-mgnn", "balemans", TRANSFER)
BASELINES = ("random-search", "uniform", "global-magnitude")

# Published CIFAR-10 ResNet-56 results of the seed papers, after their full fine-tunes
# (100+ epochs), on the original CIFAR-10 (digest: ../shared/reference/seed-agents.md).
PUBLISHED = [
    ("RL-Pruner (Wang et al.), 50 % channel sparsity", "94.20", "91.76",
     "0.20 (80.09 % FLOPs reduction)"),
    ("RL-Pruner (Wang et al.), 25 % channel sparsity", "94.20", "93.71",
     "0.47 (53.44 % FLOPs reduction)"),
    ("GNN-RL (Yu et al.), 50 % FLOPs (README)", "not stated", "93.49", "0.50"),
    ("GNN-RL as reproduced by RL-Pruner", "94.20", "92.45", "0.16 (84.40 % reduction)"),
]


def parse_configs(text: str) -> list[tuple[str, float]]:
    """``task@budget,task@budget`` into pairs, naming what is wrong."""
    from prune_gym.tasks import list_tasks

    pairs = []
    for item in text.split(","):
        task, _, budget = item.strip().partition("@")
        if task not in list_tasks():
            raise InvalidArgumentError(f"--configs: task {task!r} is not known; choose from "
                                       f"{', '.join(list_tasks())}")
        try:
            pairs.append((task, float(budget)))
        except ValueError:
            raise InvalidArgumentError(f"--configs: {item!r} needs a budget, e.g. "
                                       f"{task}@0.5") from None
    return pairs


def parse_methods(text: str) -> list[str]:
    known = [*method_names(), TRANSFER]
    if text == "all":
        return known
    names = [m.strip() for m in text.split(",")]
    unknown = [m for m in names if m not in known]
    if unknown:
        raise InvalidArgumentError(f"--methods: {', '.join(unknown)} not known; choose from "
                                   f"{', '.join(known)}")
    return names


def cell_path(task: str, budget: float, method: str, seed: int) -> Path:
    return CELLS / f"{task}@{budget:g}" / f"{method}-s{seed}.json"


def write_cell(path: Path, cell: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(cell, indent=1))
    os.replace(tmp, path)


# -- the zero-shot transfer row ---------------------------------------------------------
def _sizes(tasks: list[str]) -> dict:
    """Padding that fits every task's graph, so one policy acts on all of them."""
    import gymnasium as gym

    sizes = {"max_nodes": 0, "max_edges": 0, "max_groups": 0}
    for name in tasks:
        env = gym.make("DNNGraph-v0", model=name).unwrapped
        sizes = {"max_nodes": max(sizes["max_nodes"], env.max_nodes),
                 "max_edges": max(sizes["max_edges"], env.max_edges),
                 "max_groups": max(sizes["max_groups"], env.max_groups)}
        env.close()
    return sizes


def transfer_policy(source: str, sizes: dict, budget: float, timesteps: int, seed: int) -> Path:
    """Train the ppo-lagrangian-gat agent on ``source`` (padded to ``sizes``), once per
    seed and budget; the saved policy is reused for every target."""
    from agents.methods import METHODS
    from agents.train import train

    padded = "-".join(str(sizes[k]) for k in ("max_nodes", "max_edges", "max_groups"))
    path = CELLS / "transfer" / f"{source}@{budget:g}-{timesteps}-{padded}-s{seed}.zip"
    if path.is_file():
        return path
    kwargs = dict(METHODS["ppo-lagrangian-gat"].train_kwargs)
    result = train(**kwargs, env_kwargs={"model": source, "budget": budget, **sizes},
                   total_timesteps=timesteps, seed=seed)
    result.env.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(path)
    return path


def run_transfer(task: str, budget: float, evaluations: int, seed: int, val_samples,
                 policy_path: Path, sizes: dict) -> dict:
    """Sample episodes of the transferred policy on ``task`` (it never learns there); the
    best feasible state of ``evaluations`` evaluations, like every other search."""
    import gymnasium as gym

    from agents.ppo_lagrangian import PPOLagrangian

    start = time.perf_counter()
    env = gym.make("DNNGraph-v0", model=task, budget=budget, seed=seed,
                   eval_samples=val_samples, **sizes)
    agent = PPOLagrangian.load(policy_path, device="cpu")
    agent.set_random_seed(seed)
    evaluator = env.unwrapped.evaluator
    best, history, episodes, feasible = None, [], 0, 0
    obs, _ = env.reset(seed=seed)
    deterministic = True  # the policy's own choice first, then samples around it
    while evaluator.evaluations < evaluations and episodes < 50 * evaluations:
        action, _ = agent.predict(obs, deterministic=deterministic)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            episodes += 1
            deterministic = False
            feasible += bool(info["feasible"])
            if info["feasible"] and (best is None or info["accuracy"] > best["accuracy"]):
                best = {"accuracy": info["accuracy"], "keep": info["keep_state"]}
            history.append((evaluator.evaluations, best["accuracy"] if best else None))
            obs, _ = env.reset()
    env.close()
    return {"keep": best["keep"] if best else info["keep_state"],
            "val_accuracy": best["accuracy"] if best else info["accuracy"],
            "evaluations": evaluator.evaluations, "history": history,
            "feasible_fraction": feasible / max(episodes, 1),
            "wall_time_s": time.perf_counter() - start}


# -- one cell --------------------------------------------------------------------------
def run_cell(task: str, budget: float, method: str, seed: int, args, sizes=None) -> dict:
    torch.manual_seed(seed)
    if method == TRANSFER:
        policy = transfer_policy(args.transfer_source, sizes, budget, args.transfer_timesteps,
                                 seed)
        out = run_transfer(task, budget, args.evaluations, seed, args.val_samples, policy,
                           sizes)
        net = make_network(task)
        macs, params = net.price(out["keep"])
        limit = budget * net.base_macs
        cell = {"method": method, "task": task, "env_id": "DNNGraph-v0", "budget": budget,
                "constraint": "macs", "seed": seed, "keep": out["keep"],
                "importance": net.importance, "val_samples": args.val_samples,
                "bn_recalibration": make_evaluator(task, args.val_samples).bn_recalibration,
                "macs": int(macs), "params": int(params), "macs_ratio": macs / net.base_macs,
                "params_ratio": params / net.base_params, "feasible": bool(macs <= limit),
                "val_accuracy": out["val_accuracy"], "evaluations": out["evaluations"],
                "wall_time_s": out["wall_time_s"],
                "feasible_fraction": out["feasible_fraction"], "history": out["history"],
                "transfer_source": args.transfer_source,
                "transfer_timesteps": args.transfer_timesteps}
    else:
        result = run_method(method, task, budget=budget, evaluations=args.evaluations,
                            seed=seed, val_samples=args.val_samples)
        cell = {**result.row(), "keep": result.keep, "history": result.history}
        for key in ("test_accuracy", "finetune_steps", "finetuned_val_accuracy",
                    "finetuned_test_accuracy", "prune_gym_version"):
            cell.pop(key, None)
    return cell


def run_and_score(spec: tuple, args, sizes=None) -> tuple[dict, float]:
    """What one cell of the grid does, in this process or in a Ray worker: run it (unless
    ``spec`` carries a saved cell), score it; the cell and the seconds it took."""
    task, budget, method, seed, saved = spec
    start = time.perf_counter()
    cell = saved if saved is not None else run_cell(task, budget, method, seed, args, sizes)
    cell = score_cell(cell, args.finetune_steps, args.test_samples)
    return cell, time.perf_counter() - start


def _train_transfer(spec: tuple, args, sizes) -> str:
    """One transfer policy (``spec`` = (budget, seed)), trained before the cells that use it
    so that parallel cells never train the same policy twice."""
    budget, seed = spec
    return str(transfer_policy(args.transfer_source, sizes, budget, args.transfer_timesteps,
                               seed))


def score_cell(cell: dict, finetune_steps: int, test_samples: int | None) -> dict:
    """Test accuracy of the cell's exported state, and (``finetune_steps`` > 0) validation
    and test accuracy after the shared fine-tune (BatchNorm recalibrated first, as every
    evaluation is)."""
    from prune_gym.tasks import make_task

    task = make_task(cell["task"])
    net = make_network(task)
    evaluator = make_evaluator(task, cell["val_samples"])
    test = Evaluator(task.data.test.as_tuple(), max_samples=test_samples)
    model = net.export(cell["keep"])
    evaluator.recalibrate(model)
    cell["test_accuracy"] = test.evaluate(model).accuracy
    if not finetune_steps:
        return cell
    from prune_gym.finetune import distill

    start = time.perf_counter()
    distill(model, task.model, task.data.train.as_tuple(), steps=finetune_steps,
            seed=cell["seed"])
    plain = Evaluator(task.val_data, max_samples=cell["val_samples"])  # trained statistics
    cell["finetune_steps"] = finetune_steps
    cell["finetuned_val_accuracy"] = plain.evaluate(model).accuracy
    cell["finetuned_test_accuracy"] = test.evaluate(model).accuracy
    cell["finetune_s"] = time.perf_counter() - start
    return cell


# -- the report ------------------------------------------------------------------------
def _load_cells() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CELLS.glob("*@*/*.json"))]


def _config_rank(config: tuple[str, float]) -> tuple[int, str]:
    """Tables in the default grid's order; another version of a default task sits at its place."""
    task, budget = config
    family = [f"{t.rsplit('-v', 1)[0]}@{b}" for t, _, b in
              (c.partition("@") for c in DEFAULT_CONFIGS)]
    key = f"{task.rsplit('-v', 1)[0]}@{budget:g}"
    return (family.index(key) if key in family else len(family), task)


def _order(method: str) -> int:
    order = [*method_names(), TRANSFER]
    return order.index(method) if method in order else len(order)


def report(meta: dict) -> None:
    # a transferred policy run on its own source task is not zero-shot (it trained there,
    # spending evaluations the budget does not count): not reported
    cells = [c for c in _load_cells()
             if not (c["method"] == TRANSFER and c["task"] == c.get("transfer_source"))]
    if not cells:
        raise SystemExit("no cells saved yet: run the grid first")
    from agents.results import write_results

    rows = []
    for c in cells:
        row = {k: v for k, v in c.items() if k not in ("history", "finetune_s",
                                                        "transfer_source",
                                                        "transfer_timesteps")}
        row["keep"] = c["keep"]
        row.setdefault("test_accuracy", "")
        row.setdefault("finetune_steps", "")
        row.setdefault("finetuned_val_accuracy", "")
        row.setdefault("finetuned_test_accuracy", "")
        row["val_samples"] = "" if c["val_samples"] is None else c["val_samples"]
        row["prune_gym_version"] = meta.get("prune_gym_version", "")
        rows.append(row)
    write_results(RESULTS / "agents.csv", rows)
    configs = sorted({(c["task"], c["budget"]) for c in cells}, key=_config_rank)
    lines = ["# Agents against the baselines, at equal evaluations", "",
             f"Machine: {meta.get('machine', '?')}.", "",
             "Commands (in order; cells already saved are skipped): "
             + "; ".join(f"`{c}`" for c in meta.get("commands", [])) + ".",
             "", meta.get("note", ""), "",
             "Every method prunes to the budget (fraction of the unpruned MACs kept) with the "
             "same budget of validation evaluations (cache hits free); its best feasible "
             "state is reported. Validation accuracy is measured on the task's validation "
             "split, with BatchNorm recalibrated on 4 training batches of 64 (the "
             "environments' default); test accuracy on the test split, only reported. The "
             "digits tasks hold validation out of training. The CIFAR-10 -v0 tasks do too, "
             "but the reference checkpoints were trained on every training image, so their "
             "validation images were seen in training and flatter every state (ResNet-20: "
             "84.5 % there, 81.0 % on test); the -v2 tasks validate on a fixed half of the "
             "test split instead, which the weights never saw, and test on the other half. "
             "*Fine-tuned*: the same state after the same short knowledge-distillation "
             "fine-tune for every method (teacher: the unpruned model, training split). "
             "Mean ± std over seeds; the heuristics are deterministic. Feasible fraction: "
             "of the episodes (RL) or states (searches) that met the budget.", ""]
    for task, budget in configs:
        group = [c for c in cells if c["task"] == task and c["budget"] == budget]
        lines += [f"## {task}, budget {budget:g} of MACs", "",
                  "| method | seeds | val acc | test acc | fine-tuned val | fine-tuned test | "
                  "MACs ratio | params ratio | feasible fraction | evaluations | wall s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for method in sorted({c["method"] for c in group}, key=_order):
            runs = [c for c in group if c["method"] == method]
            lines.append(
                f"| {method} | {len(runs)} | {mean_std([r['val_accuracy'] for r in runs])} "
                f"| {mean_std([r.get('test_accuracy') for r in runs])} "
                f"| {mean_std([r.get('finetuned_val_accuracy') for r in runs])} "
                f"| {mean_std([r.get('finetuned_test_accuracy') for r in runs])} "
                f"| {np.mean([r['macs_ratio'] for r in runs]):.3f} "
                f"| {np.mean([r['params_ratio'] for r in runs]):.3f} "
                f"| {np.mean([r['feasible_fraction'] for r in runs]):.2f} "
                f"| {np.mean([r['evaluations'] for r in runs]):.0f} "
                f"| {np.mean([r['wall_time_s'] for r in runs]):.0f} |")
        steps = {c.get("finetune_steps") for c in group} - {None, ""}
        lines += ["", f"Fine-tune: {', '.join(str(s) for s in sorted(steps)) or 'not run'} "
                  "steps of batch 64.", ""]
    lines += ["## Published CIFAR-10 ResNet-56 results (after full fine-tuning)", "",
              "| method | base accuracy | accuracy | MACs kept |", "|---|---|---|---|"]
    lines += [f"| {m} | {b} | {a} | {r} |" for m, b, a, r in PUBLISHED]
    lines += ["", "Absolute numbers differ from ours for three reasons: our CIFAR-10 is a JPEG "
              "export, on which the reference checkpoint scores about 83 % (ResNet-56; 81 % "
              "for ResNet-20) instead of 93.4 %; the papers fine-tune for 100 epochs or more, "
              "we for a few hundred steps; and the papers select on the test split (GNN-RL "
              "carves its validation set from it, RL-Pruner scores on it), we on a validation "
              "split (-v0: held out of train, which the weights saw; -v2: half of the test "
              "split, reporting on the other half). Compare methods within a table, not "
              "across to these rows.",
              ""]
    lines += verdict(cells, configs)
    (RESULTS / "agents.md").write_text("\n".join(lines))
    plot(cells, configs)


def verdict(cells: list[dict], configs) -> list[str]:
    """The goal's answer per table, computed from the cells (mean validation accuracy, the
    selection metric), and how much of the budget each kind of method leaves unused."""
    lines = ["## Does a graph agent beat every baseline? (computed from the tables above)", "",
             f"Graph agents: {', '.join(GRAPH_AGENTS)}. Baselines: {', '.join(BASELINES)}. "
             "Compared by mean validation accuracy over seeds, the metric every method "
             "selects its state by; test accuracy is not used to choose.", ""]
    rl_ratios, search_ratios = [], []
    for task, budget in configs:
        group = [c for c in cells if c["task"] == task and c["budget"] == budget]
        accs = {m: [c["val_accuracy"] for c in group if c["method"] == m]
                for m in {c["method"] for c in group}}
        mean = {m: float(np.mean(v)) for m, v in accs.items()}
        graph = {m: v for m, v in mean.items() if m in GRAPH_AGENTS}
        base = {m: v for m, v in mean.items() if m in BASELINES}
        if not graph or not base:
            continue
        g, b = max(graph, key=graph.get), max(base, key=base.get)
        answer = "yes" if graph[g] > base[b] else "no"
        spread = max(float(np.std(accs[g])), float(np.std(accs[b])))
        within = (f"; within the seeds' spread, std up to {spread:.3f}"
                  if abs(graph[g] - base[b]) <= spread else "")
        lines.append(f"- {task} at {budget:g}: **{answer}**. Best graph agent {g} "
                     f"{graph[g]:.3f}, best baseline {b} {base[b]:.3f} "
                     f"({graph[g] - base[b]:+.3f}{within}).")
        for c in group:
            if c["method"] == "random-search":
                search_ratios.append(c["macs_ratio"] / budget)
            elif c["method"] not in BASELINES:
                rl_ratios.append(c["macs_ratio"] / budget)
    if rl_ratios and search_ratios:
        lines += ["", "What would change the verdict. (1) Evaluations: PPO makes a handful of "
                  "updates at these budgets, while the papers train for 800 (AMC) to 15,000 "
                  "(GNN-RL) episodes. (2) Where states end: random search scales every "
                  "candidate up to the budget boundary (its best states use "
                  f"{np.mean(search_ratios):.2f} of the budget on average), while the learned "
                  f"agents' best states use {np.mean(rl_ratios):.2f} (from "
                  f"{min(rl_ratios):.2f}), and accuracy is steep in the MACs near the budget: "
                  "projecting the final state onto the boundary, or paying for unused "
                  "capacity, removes that handicap. (3) Prior knowledge: a graph policy "
                  f"pre-trained on other networks ({TRANSFER}) spends no evaluation to start "
                  "from a sensible state.", ""]
    return lines


def plot(cells: list[dict], configs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, (task, budget) in zip(axes[0], configs):
        group = [c for c in cells if c["task"] == task and c["budget"] == budget]
        for method in sorted({c["method"] for c in group}, key=_order):
            runs = [c for c in group if c["method"] == method]
            horizon = int(max(r["evaluations"] for r in runs))
            grid = np.arange(1, horizon + 1)
            curves = []
            for r in runs:
                points = [(e, a) for e, a in r["history"] if a is not None]
                curve = np.full(len(grid), np.nan)
                for e, a in points:
                    curve[int(e) - 1:] = a
                curves.append(curve)
            with warnings.catch_warnings():  # before a run's first feasible state: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.vstack(curves), axis=0)
            style = "--" if method in ("uniform", "global-magnitude") else "-"
            if horizon == 1:  # a heuristic: one state, drawn across the plot
                horizon_all = int(max(c["evaluations"] for c in group))
                ax.hlines(mean[0], 1, horizon_all, linestyles="dashed", label=method,
                          colors=f"C{_order(method) % 10}")
            else:
                ax.plot(grid, mean, style, label=method, color=f"C{_order(method) % 10}")
        ax.set_title(f"{task} @ {budget:g} MACs", fontsize=9)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best feasible val accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "agents.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="task@budget pairs, comma-separated")
    parser.add_argument("--methods", default="all", help="comma-separated, or all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=200,
                        help="validation evaluations every method may spend")
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--transfer-source", default="digits-resnet-v1")
    parser.add_argument("--transfer-timesteps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ray", action="store_true",
                        help='run the cells as Ray tasks (pip install "prune-gym[ray]")')
    parser.add_argument("--ray-cpus", type=int, default=None,
                        help="CPUs of the local Ray cluster --ray starts (default: all)")
    parser.add_argument("--ray-address", default=None,
                        help="with --ray: a running Ray cluster to use, e.g. auto")
    parser.add_argument("--report", action="store_true", help="only aggregate saved cells")
    parser.add_argument("--note", default="", help="a sentence for the report's header")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    meta_path = CELLS / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if args.report and args.note:
        meta["note"] = args.note
        meta_path.write_text(json.dumps(meta, indent=1))
    if not args.report:
        configs = parse_configs(args.configs)
        methods = parse_methods(args.methods)
        # one padding for every task of the default grid, so a transferred policy (saved per
        # seed and budget) fits whichever target it is run on
        grid = {t for t, _ in parse_configs(",".join(DEFAULT_CONFIGS))}
        sizes = _sizes(sorted(grid | {t for t, _ in configs} | {args.transfer_source})) \
            if TRANSFER in methods else None
        todo = []  # (task, budget, method, seed, saved cell or None)
        for task, budget in configs:
            for method in methods:
                for seed in range(args.seeds):
                    path = cell_path(task, budget, method, seed)
                    saved = json.loads(path.read_text()) if path.is_file() else None
                    if saved is not None and (saved.get("finetune_steps")
                                              or not args.finetune_steps):
                        continue  # done; a cell saved without fine-tune gets it now
                    todo.append((task, budget, method, seed, saved))

        def done(i: int, result: tuple[dict, float]) -> None:
            (task, budget, method, seed, _), (cell, seconds) = todo[i], result
            write_cell(cell_path(task, budget, method, seed), cell)
            print(f"{task}@{budget:g} {method} seed {seed}: val "
                  f"{cell['val_accuracy']:.3f} test {cell['test_accuracy']:.3f} -> "
                  f"{cell.get('finetuned_test_accuracy', float('nan')):.3f} after "
                  "fine-tune, "
                  f"{cell['evaluations']} evaluations, {seconds:.0f} s", flush=True)

        if args.ray:
            from agents.distributed import run_cells_on_ray

            # Ray puts the driver's working directory and this script's folder first on its
            # workers' sys.path: from benchmarks/ this script would shadow the agents package
            os.chdir(ROOT)
            cluster = {"threads": args.threads, "num_cpus": args.ray_cpus,
                       "address": args.ray_address}
            policies = sorted({(b, s) for _, b, m, s, saved in todo
                               if m == TRANSFER and saved is None})
            if policies:
                run_cells_on_ray(policies, functools.partial(_train_transfer, args=args,
                                                             sizes=sizes), **cluster)
            run_cells_on_ray(todo, functools.partial(run_and_score, args=args, sizes=sizes),
                             on_result=done, **cluster)
        else:
            for i, spec in enumerate(todo):
                done(i, run_and_score(spec, args, sizes))
        command = "python benchmarks/agents.py " + " ".join(sys.argv[1:])
        # read again: another run of the grid may have finished meanwhile
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        meta.update(machine=describe_machine(),
                    prune_gym_version=__import__("prune_gym").__version__)
        meta["commands"] = [*meta.get("commands", []), command]
        if args.note:
            meta["note"] = args.note
        CELLS.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(meta, indent=1))
    report(meta)


if __name__ == "__main__":
    main()
