"""Every pruning method by name, run to the same budget of evaluations.

The question a user asks first is whether a learned agent beats the heuristics at the same
cost, and the cost of a pruning search is the number of validation evaluations it pays for
(each is a forward pass over the validation subset, plus BatchNorm recalibration). So every
method here is run by :func:`run_method` against one budget of ``evaluations`` (or, for an
RL agent, of ``timesteps``), scored by the same :func:`make_evaluator`, and reported as one
:class:`MethodResult`: the best feasible state it found, what it cost, and the curve of its
best feasible validation accuracy against evaluations.

The command line's ``search``, the demo and ``benchmarks/agents_grid.py`` all go through here,
so a row of the benchmark and a run of the CLI mean the same thing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

import prune_gym
from agents.rl_pruner import RLPruner
from agents.run_dir import Curve, RunDirectory, best_state, plain_keep
from agents.train import PRESETS, train
from prune_gym.arguments import check_int
from prune_gym.budget import CONSTRAINTS, Budget, as_budget
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.network import PrunableNetwork
from prune_gym.results import write_results
from prune_gym.search import global_magnitude, random_search, uniform
from prune_gym.tasks.registry import as_task

__all__ = ["KINDS", "METHODS", "Method", "MethodResult", "baseline_names", "check_method",
           "make_evaluator", "make_network", "method_names", "register_method", "run_method"]


KINDS = ("rl", "search", "heuristic")


@dataclass(frozen=True)
class Method:
    """A named pruning method.

    ``kind`` is ``"rl"`` (an agent trained through :func:`agents.train`), ``"search"`` (a
    non-gradient search that spends evaluations) or ``"heuristic"`` (one state, one
    evaluation). RL methods carry the arguments they pass to :func:`agents.train`.
    ``chooses_channels``: a method without an environment that chooses channels one by one
    (so ``round_to`` has no count to round); a method with one asks its environment.
    ``constraints``: the budgets it can prune to. ``run``: how a heuristic or search finds
    its state: ``run(net, budget) -> keep`` for a heuristic (one evaluation, its score),
    ``run(net, evaluator, budget, evaluations, seed, record) -> keep`` for a search, which
    calls ``record(evaluations spent, accuracy)`` as its best feasible state improves
    (``budget`` is a :class:`prune_gym.budget.Budget`). ``baseline``: one of the baselines
    every table compares against.
    """

    name: str
    kind: str
    env_id: str | None
    description: str
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    chooses_channels: bool = False
    constraints: tuple[str, ...] = CONSTRAINTS
    run: Callable | None = field(default=None, compare=False)
    baseline: bool = False

    @property
    def rounds_counts(self) -> bool:
        """Whether the method sets channel counts, which ``round_to`` can round."""
        if self.env_id is not None:
            from prune_gym.envs import ENV_IDS

            return ENV_IDS[self.env_id].rounds_counts
        return not self.chooses_channels


LATENCY_MODEL = "latency_model.json"  # a run directory's copy of its latency model


# PPOLagrangian with the graph policy: per-group ratios read from a GAT's node embeddings
# (one policy for any network), the presets' settling multiplier on the signed cost. The
# rollout is short (32 steps) so that a budget of a few hundred evaluations still gives
# several updates; the rest are SB3's PPO defaults.
_GAT_PPO = {
    "env_id": "DNNGraph-v0", "algo": "ppo_lagrangian", "policy": "GraphPolicy",
    "policy_kwargs": {"features_extractor": "GATExtractor"},
    "algo_kwargs": {"n_steps": 32, "batch_size": 32, "n_epochs": 10, "learning_rate": 3e-4,
                    "cost_key": "signed_cost", "cost_limit": 0.0, "lagrangian": "pid",
                    "normalize_cost_advantage": True,
                    "lagrangian_kwargs": {"kp": 2.0, "ki": 0.1, "kd": 0.0, "ema": 0.0}},
}

def _random_search(net, evaluator, budget, evaluations, seed, record):
    start = evaluator.evaluations
    return random_search(net, evaluator, budget, trials=evaluations, seed=seed,
                         on_evaluation=lambda keep, accuracy: record(
                             evaluator.evaluations - start, accuracy))


def _rl_pruner(net, evaluator, budget, evaluations, seed, record):
    agent = RLPruner(net, evaluator, budget=budget.fraction, constraint=budget.constraint,
                     seed=seed, **rl_pruner_schedule(net, budget.fraction, budget.constraint,
                                                     evaluations))
    agent.learn(max_evaluations=max(1, evaluations - 1))  # the last: scoring its state
    for point in agent.history:
        record(point["evaluations"], point["best_val_accuracy"])
    return agent.predict()


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS`, so that :func:`run_method`, the command line
    (``prune-gym agents``, ``search --agent``) and the benchmark know it by name.

    A ``"heuristic"`` or ``"search"`` method carries its ``run`` (see :class:`Method`); an
    ``"rl"`` one the :func:`agents.train` arguments it trains with.

    Raises:
        InvalidArgumentError: the name is taken (unless ``replace``), or the method is
            incomplete.
    """
    if not isinstance(method, Method):
        raise InvalidArgumentError(f"method must be an agents.methods.Method; got "
                                   f"{type(method).__name__}")
    if method.kind not in KINDS:
        raise InvalidArgumentError(f"Method(kind={method.kind!r}) is not a kind; choose one "
                                   f"of {', '.join(KINDS)}")
    if method.kind == "rl" and method.env_id is None:
        raise InvalidArgumentError(f"Method({method.name!r}, kind='rl') needs env_id: the "
                                   "environment its agent trains on")
    if method.kind != "rl" and not callable(method.run):
        raise InvalidArgumentError(f"Method({method.name!r}, kind={method.kind!r}) needs "
                                   "run=: the callable that finds its keep state")
    if method.name in METHODS and not replace:
        raise InvalidArgumentError(f"method {method.name!r} is registered already; choose "
                                   "another name, or pass replace=True")
    METHODS[method.name] = method
    return method


for _method in (
    Method("ppo-lagrangian-gat", "rl", "DNNGraph-v0",
           "PPOLagrangian + GraphPolicy (GAT) on DNNGraph-v0", _GAT_PPO),
    Method("ppo-lagrangian-mgnn", "rl", "DNNGraph-v0",
           "PPOLagrangian + m-GNN on DNNGraph-v0 (the GNN-RL preset)", {"preset": "gnnrl"}),
    Method("balemans", "rl", "ChannelMask-v0",
           "MaskablePPOLagrangian + GAT on ChannelMask-v0 (the Balemans et al. preset)",
           {"preset": "balemans"}),
    Method("malik", "rl", "LayerRatio-v0",
           "PPOLagrangian with small MLPs on LayerRatio-v0 (the Malik et al. preset)",
           {"preset": "malik"}),
    Method("uniform", "heuristic", None, "the same fraction kept in every group",
           run=uniform, baseline=True),
    Method("global-magnitude", "heuristic", None,
           "one importance threshold across the network (group-normalised L1)",
           run=global_magnitude, baseline=True),
    Method("random-search", "search", None,
           "best of random per-group ratio vectors scaled into the budget",
           run=_random_search, baseline=True),
    Method("amc", "rl", PRESETS["amc"].env_id,
           "AMC: DDPG on LayerRatio-v0 with the action wall (the AMC preset)",
           {"preset": "amc"}),
    Method("rl-pruner", "search", None,
           "RL-Pruner: a noisy distribution of each step's channel removals",
           run=_rl_pruner, chooses_channels=True, constraints=("macs", "params")),
):
    register_method(_method)
del _method


def method_names(kind: str | None = None) -> list[str]:
    """Every registered method name (or those of one ``kind``), in table order."""
    return [m.name for m in METHODS.values() if kind is None or m.kind == kind]


def baseline_names() -> list[str]:
    """The baselines every table compares against (uniform, global magnitude, random
    search), in table order."""
    return [m.name for m in METHODS.values() if m.baseline]


def check_method(name) -> Method:
    """The :class:`Method` called ``name``, or an error listing the known ones."""
    if not isinstance(name, str) or name not in METHODS:
        raise InvalidArgumentError(f"method={name!r} is not a known method; choose one of "
                                   f"{', '.join(METHODS)}")
    return METHODS[name]


def make_network(task, importance: str = "l1") -> PrunableNetwork:
    """The analysed network every method prunes: :meth:`prune_gym.tasks.Task.network`."""
    return as_task(task).network(importance)


def make_evaluator(task, val_samples: int | None = None) -> Evaluator:
    """How every method is scored: :meth:`prune_gym.tasks.Task.evaluator` (the task's
    validation split, its first ``val_samples``, BatchNorm recalibrated on the environments'
    default batches, exactly as an episode end)."""
    return as_task(task).evaluator(val_samples)


@dataclass
class MethodResult:
    """What a method found: its best feasible state (or, if it found none, its last), what
    that state costs and scores, and what the search cost."""

    method: str
    task: str
    env_id: str | None
    budget: float
    constraint: str
    seed: int
    keep: list
    importance: str
    val_samples: int | None
    bn_recalibration: int
    macs: int
    params: int
    macs_ratio: float
    params_ratio: float
    feasible: bool
    val_accuracy: float
    evaluations: int
    wall_time_s: float
    feasible_fraction: float
    history: list[tuple[int, float]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The state as a ``results.csv`` row (test and fine-tune columns left empty)."""
        row = {k: v for k, v in asdict(self).items() if k != "history"}
        row["keep"] = list(self.keep)
        row["val_samples"] = "" if self.val_samples is None else self.val_samples
        row.update(test_accuracy="", finetune_steps="", finetuned_val_accuracy="",
                   finetuned_test_accuracy="", prune_gym_version=prune_gym.__version__)
        return row


class _EvaluationBudget(BaseCallback):
    """Stop an SB3 agent once its environments have spent ``evaluations`` (all workers
    together, cache hits free), recording the curve and the episodes' feasibility."""

    def __init__(self, curve: Curve, evaluations: int | None):
        super().__init__()
        self.curve = curve
        self.evaluations = evaluations
        self.counts: dict[int, int] = {}
        self.episodes = self.feasible = 0
        self.last: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        return self.curve.offset + sum(self.counts.values())

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        for i, info in enumerate(self.locals.get("infos", [])):
            self.counts[i] = int(info.get("evaluations", self.counts.get(i, 0)))
            if dones is not None and dones[i] and "accuracy" in info:
                self.episodes += 1
                self.feasible += bool(info.get("feasible"))
                self.last = info
                self.curve.record(self.total, float(info["accuracy"])
                                  if info.get("feasible") else None)
        return self.evaluations is None or self.total < self.evaluations


def _train_budget(evaluations: int | None, timesteps: int | None) -> int:
    """Environment steps to give ``agents.train``: the timesteps asked, or when only an
    evaluation budget is given, a cap far above it (the budget callback stops first)."""
    if timesteps is not None:
        return timesteps
    return evaluations * 400 + 10_000


def _run_rl(method: Method, task, budget, constraint, evaluations, timesteps, seed,
            run_dir, resume, val_samples, round_to, latency_model, curve
            ) -> tuple[list, dict, float]:
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in method.train_kwargs.items()}
    env_kwargs = {**kwargs.pop("env_kwargs", {}), "model": task.name, "budget": budget,
                  "constraint": constraint}
    if val_samples is not None:
        env_kwargs["eval_samples"] = val_samples
    if round_to is not None:
        env_kwargs["round_to"] = round_to
    if latency_model is not None:  # the run directory's copy, so that config.json names it
        env_kwargs["latency_model"] = str(run_dir / LATENCY_MODEL) if run_dir is not None \
            else latency_model
    stopper = _EvaluationBudget(curve, evaluations)
    result = train(**kwargs, env_kwargs=env_kwargs, seed=seed,
                   total_timesteps=_train_budget(evaluations, timesteps),
                   run_dir=run_dir, resume=resume and run_dir is not None
                   and (run_dir / "config.json").is_file(), callback=stopper)
    result.env.close()
    fraction = stopper.feasible / stopper.episodes if stopper.episodes else 0.0
    if result.best is not None:
        return result.best["keep_state"], {"val_accuracy": result.best["accuracy"]}, fraction
    if stopper.last is None:
        raise InvalidArgumentError(
            f"{method.name} finished no episode in its budget (evaluations={evaluations}, "
            f"timesteps={timesteps}); give it more")
    last = stopper.last
    return last.get("keep_state", last["keep"]), {"val_accuracy": last["accuracy"]}, fraction


def _run_search(method: Method, net, evaluator, spec: Budget, evaluations, seed,
                curve) -> tuple[list, dict, float]:
    if evaluations is None:
        raise InvalidArgumentError(f"method={method.name!r} is a search: give it a budget of "
                                   "evaluations (evaluations=K)")

    def record(spent: int, accuracy: float | None) -> None:
        curve.record(curve.offset + spent, accuracy)

    return method.run(net, evaluator, spec, evaluations, seed, record), {}, 1.0


def rl_pruner_schedule(net, budget: float, constraint: str, evaluations: int) -> dict:
    """RL-Pruner's pruning schedule fitted to a budget of evaluations.

    A step of RL-Pruner costs ``lr_epoch * sample_num`` evaluations, and its code's quota
    (1 % of the channels per step, 10 epochs of 8 samples) needs about 80 evaluations per
    step over some 50 steps: thousands. Given fewer, it would run out long before it meets
    the budget and end on states it never evaluated. So, keeping ``sample_num`` (8) and the
    rest of the code's defaults, the steps and epochs are scaled to the budget: about
    ``sqrt(evaluations / 8)`` steps of ``evaluations / (8 * steps)`` epochs, each step
    removing an equal share of the channels that the uniform baseline removes to meet the
    budget.
    """
    sample_num = 8
    sizes = np.array([g.size for g in net.groups])
    removed = 1.0 - sum(uniform(net, budget, constraint)) / sizes.sum()
    steps = max(1, round(math.sqrt(evaluations / sample_num)))
    lr_epoch = max(1, evaluations // (sample_num * steps))
    ratio = max(removed / steps, 1.0 / sizes.sum())
    return {"prune_ratio": float(ratio), "lr_epoch": int(lr_epoch), "sample_num": sample_num}


def run_method(name: str, task, *, budget: float, constraint: str = "macs",
               evaluations: int | None = None, timesteps: int | None = None, seed: int = 0,
               run_dir: str | os.PathLike | None = None, resume: bool = False,
               val_samples: int | None = None, round_to: int | None = None,
               latency_model=None,
               on_progress: Callable[[int, float | None], None] | None = None) -> MethodResult:
    """Run method ``name`` on ``task`` to ``budget`` of ``constraint``, for at most
    ``evaluations`` validation evaluations (or ``timesteps`` environment steps, RL only).

    Args:
        name: a name in :data:`METHODS` (see :func:`method_names`).
        task: a task name (``prune_gym.tasks.list_tasks()``) or a task.
        budget: fraction of the unpruned network's ``constraint`` to keep, in (0, 1].
        evaluations: the evaluations the method may spend (searches need it; RL agents stop
            there). Heuristics spend one.
        timesteps: environment steps for an RL agent (instead of, or as well as,
            ``evaluations``: whichever comes first).
        seed: seeds the agent, the environments and the searches.
        run_dir: where to write the run (``search.json``, ``curve.csv``, ``results.csv``,
            ``best.json``; RL agents add :func:`agents.train`'s files). None: nothing written.
        resume: continue the search in ``run_dir`` (RL agents from their last checkpoint).
        val_samples: score on the first ``val_samples`` validation images (default all).
        round_to: keep every group's count a multiple of this (the environments' and the
            baselines' ``round_to``), for networks that run as fast as their MACs say. Not
            for methods that choose channels one by one (the ChannelMask agents, RL-Pruner).
        latency_model: with ``constraint="latency"``, what prices the budget: a
            :class:`~prune_gym.LatencyModel` of the task's network or the JSON it was saved
            to (``prune-gym latency-model``); copied into ``run_dir``. Not for RL-Pruner.
        on_progress: called with (evaluations so far, best feasible accuracy or None) as the
            curve grows.
    """
    method = check_method(name)
    task = as_task(task)
    evaluations = check_int(evaluations, "evaluations", minimum=1, optional=True,
                            meaning="validation evaluations the method may spend")
    timesteps = check_int(timesteps, "timesteps", minimum=1, optional=True,
                          meaning="environment steps")
    seed = check_int(seed, "seed")
    val_samples = check_int(val_samples, "val_samples", minimum=1, optional=True)
    if method.kind == "rl" and evaluations is None and timesteps is None:
        raise InvalidArgumentError(f"method={name!r} trains an agent: give it evaluations=K "
                                   "or timesteps=N")
    if method.kind != "rl" and timesteps is not None and evaluations is None:
        raise InvalidArgumentError(f"timesteps is for RL agents; {name!r} spends evaluations: "
                                   "give evaluations=K")
    spec = as_budget(budget, constraint, round_to, latency_model)
    if spec.constraint not in method.constraints:
        raise InvalidArgumentError(
            f"constraint={spec.constraint!r} is not for method={name!r}; it takes "
            f"{', '.join(method.constraints)}")
    net = task.network()
    bound = spec.bind(net, who=f"method={name!r}", rounds=method.rounds_counts)
    budget, constraint, round_to = spec.fraction, spec.constraint, spec.round_to
    latency_model = bound.latency_model
    path = Path(run_dir) if run_dir is not None else None
    settings = {"method": name, "task": task.name, **bound.settings(),
                "evaluations": evaluations, "timesteps": timesteps, "seed": seed,
                "val_samples": val_samples, "prune_gym_version": prune_gym.__version__}
    run = None
    if path is not None:  # a search starts again on resume: its settings are rewritten
        run = RunDirectory(path, "search.json").open(settings, resume=resume, keys=(
            "method", "task", "budget", "constraint", "seed", "val_samples", "round_to",
            "latency_model"))
        run.write_json("search.json", settings)
    if path is not None and latency_model is not None:
        latency_model.save(path / LATENCY_MODEL)
    # an RL agent resumes from its checkpoint and its curve goes on; a search is seeded and
    # cheap next to training, so it starts again (its curve too)
    curve = run.curve(on_progress, resume and method.kind == "rl") if run is not None \
        else Curve(None, on_progress)
    evaluator = task.evaluator(val_samples)
    fraction = 1.0
    if method.kind == "rl":
        keep, scored, fraction = _run_rl(method, task, budget, constraint, evaluations,
                                         timesteps, seed, path, resume, val_samples, round_to,
                                         latency_model, curve)
        spent = curve.points[-1][0] if curve.points else 0
    elif method.kind == "search":
        keep, scored, fraction = _run_search(method, net, evaluator, spec, evaluations, seed,
                                             curve)
    else:
        keep = method.run(net, spec)
        scored, spent = {}, 0
    feasible = bound.feasible(keep)
    if "val_accuracy" not in scored:  # heuristics, and searches' best (a cache hit)
        scored["val_accuracy"] = float(evaluator.evaluate_keep(net, keep).accuracy)
        if method.kind == "heuristic":
            spent = evaluator.evaluations
            curve.record(spent, scored["val_accuracy"] if feasible else None)
    if method.kind == "search":  # the final state's score included (a cache hit if seen)
        spent = curve.offset + evaluator.evaluations
        curve.record(spent, scored["val_accuracy"] if feasible else None)
    macs, params = net.price(keep)
    result = MethodResult(
        method=name, task=task.name, env_id=method.env_id, budget=float(budget),
        constraint=constraint, seed=seed, keep=plain_keep(keep), importance=net.importance,
        val_samples=val_samples, bn_recalibration=evaluator.bn_recalibration, macs=int(macs),
        params=int(params), macs_ratio=macs / net.base_macs,
        params_ratio=params / net.base_params, feasible=feasible,
        val_accuracy=float(scored["val_accuracy"]), evaluations=int(spent),
        wall_time_s=round(curve.elapsed, 3), feasible_fraction=float(fraction),
        history=list(curve.points))
    if run is not None:
        _write_run(run, result)
    return result


def _write_run(run: RunDirectory, result: MethodResult) -> None:
    write_results(run.path / "results.csv", [result.row()])
    seen = run.read_best()  # an agent's own record of the state says when it saw it
    timestep = seen.get("timestep") if seen and seen.get("keep_state") == result.keep else None
    run.write_best(best_state(accuracy=result.val_accuracy, keep_state=result.keep,
                              macs_ratio=result.macs_ratio, params_ratio=result.params_ratio,
                              feasible=result.feasible, evaluations=result.evaluations,
                              timestep=timestep))
