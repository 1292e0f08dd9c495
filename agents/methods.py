"""Every pruning method by name, run to the same budget of evaluations.

The question a user asks first is whether a learned agent beats the heuristics at the same
cost, and the cost of a pruning search is the number of validation evaluations it pays for
(each is a forward pass over the validation subset, plus BatchNorm recalibration). So every
method here is run by :func:`run_method` against one budget of ``evaluations`` (or, for an
RL agent, of ``timesteps``), scored by the same :func:`make_evaluator`, and reported as one
:class:`MethodResult`: the best feasible state it found, what it cost, and the curve of its
best feasible validation accuracy against evaluations.

The command line's ``search``, the demo and ``benchmarks/agents.py`` all go through here,
so a row of the benchmark and a run of the CLI mean the same thing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

import prune_gym
from agents.baselines import budget_limit, global_magnitude, random_search, uniform
from agents.common.callbacks import write_json_atomic
from prune_gym.arguments import check_int
from prune_gym.envs.problem import DEFAULT_BN_BATCHES
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.network import PrunableNetwork

__all__ = ["METHODS", "Method", "MethodResult", "make_evaluator", "make_network", "run_method"]


@dataclass(frozen=True)
class Method:
    """A named pruning method.

    ``kind`` is ``"rl"`` (an agent trained through :func:`agents.train`), ``"search"`` (a
    non-gradient search that spends evaluations) or ``"heuristic"`` (one state, one
    evaluation). RL methods carry the arguments they pass to :func:`agents.train`.
    ``rounds_counts``: whether the method sets channel counts, which ``round_to`` can round
    (not so for methods that choose channels one by one).
    """

    name: str
    kind: str
    env_id: str | None
    description: str
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    rounds_counts: bool = True


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

_METHODS = [
    Method("ppo-lagrangian-gat", "rl", "DNNGraph-v0",
           "PPOLagrangian + GraphPolicy (GAT) on DNNGraph-v0", _GAT_PPO),
    Method("ppo-lagrangian-mgnn", "rl", "DNNGraph-v0",
           "PPOLagrangian + m-GNN on DNNGraph-v0 (the GNN-RL preset)", {"preset": "gnnrl"}),
    Method("balemans", "rl", "ChannelMask-v0",
           "MaskablePPOLagrangian + GAT on ChannelMask-v0 (the Balemans et al. preset)",
           {"preset": "balemans"}, rounds_counts=False),
    Method("malik", "rl", "LayerRatio-v0",
           "PPOLagrangian with small MLPs on LayerRatio-v0 (the Malik et al. preset)",
           {"preset": "malik"}),
    Method("random-search", "search", None,
           "best of random per-group ratio vectors scaled into the budget"),
    Method("uniform", "heuristic", None, "the same fraction kept in every group"),
    Method("global-magnitude", "heuristic", None,
           "one importance threshold across the network (group-normalised L1)"),
]
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}


def register_method(method: Method) -> None:
    """Add a method (the agents that live in their own packages register themselves)."""
    METHODS[method.name] = method


def _register_optional() -> None:
    """Register the agents that live in their own packages (AMC's preset, RL-Pruner)."""
    from agents.train import PRESETS

    if "amc" in PRESETS and "amc" not in METHODS:
        register_method(Method("amc", "rl", PRESETS["amc"].env_id,
                               "AMC: DDPG on LayerRatio-v0 with the action wall (the AMC preset)",
                               {"preset": "amc"}))
    if "rl-pruner" not in METHODS:
        try:
            import agents.rl_pruner  # noqa: F401
        except ImportError:
            return
        register_method(Method("rl-pruner", "search", None,
                               "RL-Pruner: a noisy distribution of each step's channel removals",
                               rounds_counts=False))


def method_names() -> list[str]:
    """Every known method name, in table order."""
    _register_optional()
    return list(METHODS)


def check_method(name) -> Method:
    """The :class:`Method` called ``name``, or an error listing the known ones."""
    _register_optional()
    if not isinstance(name, str) or name not in METHODS:
        raise InvalidArgumentError(f"method={name!r} is not a known method; choose one of "
                                   f"{', '.join(METHODS)}")
    return METHODS[name]


def _task(task):
    """A :class:`prune_gym.tasks.Task` from a task or its name."""
    from prune_gym.tasks import list_tasks, make_task

    if isinstance(task, str):
        if task not in list_tasks():
            raise InvalidArgumentError(f"task={task!r} is not a known task; choose one of "
                                       f"{', '.join(list_tasks())}")
        return make_task(task)
    if not hasattr(task, "name") or not hasattr(task, "data"):
        raise InvalidArgumentError(f"task must be a task name or a prune_gym.tasks.Task; got "
                                   f"{type(task).__name__}")
    return task


def make_network(task, importance: str = "l1") -> PrunableNetwork:
    """The analysed network every method prunes (as the environments build it)."""
    task = _task(task)
    return PrunableNetwork(task.model, task.example_inputs, importance=importance)


def make_evaluator(task, val_samples: int | None = None) -> Evaluator:
    """How every method is scored: the task's validation split (its first ``val_samples``),
    BatchNorm recalibrated on the environments' default batches, exactly as an episode end."""
    task = _task(task)
    return Evaluator(task.val_data, max_samples=val_samples,
                     train_data=task.data.train.as_tuple(),
                     bn_recalibration=DEFAULT_BN_BATCHES)


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


class _Curve:
    """Best feasible validation accuracy against evaluations spent, appended to
    ``curve.csv`` as it grows (so an interrupted run keeps it, and a resumed one goes on)."""

    def __init__(self, run_dir: Path | None, on_progress: Callable | None, resume: bool):
        self.path = run_dir / "curve.csv" if run_dir is not None else None
        self.on_progress = on_progress
        self.points: list[tuple[int, float]] = []
        self.best: float | None = None
        self.seconds = 0.0
        if resume and self.path is not None and self.path.is_file():
            with open(self.path) as f:
                for r in csv.DictReader(f):
                    best = float(r["best_val_accuracy"]) if r["best_val_accuracy"] else None
                    self.points.append((int(r["evaluations"]), best))
                    self.best = best
                    self.seconds = float(r["wall_time_s"])
        elif self.path is not None:
            self.path.write_text("evaluations,best_val_accuracy,wall_time_s\n")
        self.offset = self.points[-1][0] if self.points else 0
        self._start = time.perf_counter() - self.seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def record(self, evaluations: int, accuracy: float | None) -> None:
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = accuracy
        point = (int(evaluations), self.best)
        if self.points and self.points[-1] == point:
            return
        self.points.append(point)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(f"{point[0]},{'' if self.best is None else self.best},"
                        f"{self.elapsed:.3f}\n")
        if self.on_progress is not None:
            self.on_progress(point[0], self.best)


class _EvaluationBudget(BaseCallback):
    """Stop an SB3 agent once its environments have spent ``evaluations`` (all workers
    together, cache hits free), recording the curve and the episodes' feasibility."""

    def __init__(self, curve: _Curve, evaluations: int | None):
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


def _settings(method, task, budget, constraint, evaluations, timesteps, seed, val_samples,
              round_to, latency_model):
    return {"method": method, "task": task, "budget": budget, "constraint": constraint,
            "evaluations": evaluations, "timesteps": timesteps, "seed": seed,
            "val_samples": val_samples, "round_to": round_to,
            # what prices a latency budget: a resume must price it alike
            "latency_model": None if latency_model is None
            else [*latency_model.coefficients, latency_model.base_s],
            "prune_gym_version": prune_gym.__version__}


def _check_run_dir(run_dir: Path | None, settings: dict, resume: bool) -> None:
    """Refuse a run directory that holds another search; start or resume this one."""
    from agents.train import RunDirectoryError

    if run_dir is None:
        return
    saved_path = run_dir / "search.json"
    if saved_path.is_file():
        if not resume:
            raise RunDirectoryError(f"run_dir={str(run_dir)!r} already holds a run; resume it "
                                    "or choose a new directory")
        saved = json.loads(saved_path.read_text())
        for key in ("method", "task", "budget", "constraint", "seed", "val_samples",
                    "round_to", "latency_model"):
            if saved.get(key) != settings.get(key):
                raise RunDirectoryError(
                    f"run_dir={str(run_dir)!r} was made for {key}={saved.get(key)!r}, not "
                    f"{settings.get(key)!r}; resume it with the same {key}, or use a new "
                    "directory")
    elif resume:
        raise RunDirectoryError(f"run_dir={str(run_dir)!r} holds no run to resume "
                                "(no search.json); start it without resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(settings, saved_path)


def _train_budget(evaluations: int | None, timesteps: int | None) -> int:
    """Environment steps to give ``agents.train``: the timesteps asked, or when only an
    evaluation budget is given, a cap far above it (the budget callback stops first)."""
    if timesteps is not None:
        return timesteps
    return evaluations * 400 + 10_000


def _run_rl(method: Method, task, budget, constraint, evaluations, timesteps, seed,
            run_dir, resume, val_samples, round_to, latency_model, curve
            ) -> tuple[list, dict, float]:
    from agents.train import train

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


def _run_search(method: Method, net, evaluator, budget, constraint, evaluations, seed,
                round_to, curve) -> tuple[list, dict, float]:
    if evaluations is None:
        raise InvalidArgumentError(f"method={method.name!r} is a search: give it a budget of "
                                   "evaluations (evaluations=K)")
    start = evaluator.evaluations

    def seen(keep, accuracy: float) -> None:
        curve.record(curve.offset + evaluator.evaluations - start, accuracy)

    if method.name == "random-search":
        keep = random_search(net, evaluator, budget, constraint, trials=evaluations, seed=seed,
                             on_evaluation=seen, round_to=round_to)
    else:  # rl-pruner
        from agents.rl_pruner import RLPruner

        agent = RLPruner(net, evaluator, budget=budget, constraint=constraint, seed=seed,
                         **rl_pruner_schedule(net, budget, constraint, evaluations))
        agent.learn(max_evaluations=max(1, evaluations - 1))  # the last: scoring its state
        for point in agent.history:
            curve.record(curve.offset + point["evaluations"], point["best_val_accuracy"])
        keep = agent.predict()
    return keep, {}, 1.0


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


def _latency_model(net, name: str, constraint, latency_model):
    """The latency model, loaded and set on ``net``, when the constraint is latency."""
    if constraint != "latency":
        if latency_model is not None:
            raise InvalidArgumentError(f"latency_model is read only with constraint='latency'; "
                                       f"got constraint={constraint!r}")
        return None
    if latency_model is None:
        raise InvalidArgumentError(
            "constraint='latency' needs latency_model=: a LatencyModel of the task's network "
            "fitted on this machine, or its JSON (prune-gym latency-model --task T --out F)")
    if name == "rl-pruner":
        raise InvalidArgumentError("constraint='latency' is not for rl-pruner: it re-analyses "
                                   "the network as it prunes; choose another method")
    net.set_latency_model(latency_model)
    return net.latency_model


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
    task = _task(task)
    evaluations = check_int(evaluations, "evaluations", minimum=1, optional=True,
                            meaning="validation evaluations the method may spend")
    timesteps = check_int(timesteps, "timesteps", minimum=1, optional=True,
                          meaning="environment steps")
    seed = check_int(seed, "seed")
    val_samples = check_int(val_samples, "val_samples", minimum=1, optional=True)
    round_to = check_int(round_to, "round_to", minimum=1, optional=True,
                         meaning="the multiple every kept count is rounded to")
    if round_to is not None and not method.rounds_counts:
        raise InvalidArgumentError(
            f"round_to is not for method={name!r}: it chooses channels one by one; methods "
            f"that take it: {', '.join(m.name for m in METHODS.values() if m.rounds_counts)}")
    if method.kind == "rl" and evaluations is None and timesteps is None:
        raise InvalidArgumentError(f"method={name!r} trains an agent: give it evaluations=K "
                                   "or timesteps=N")
    if method.kind != "rl" and timesteps is not None and evaluations is None:
        raise InvalidArgumentError(f"timesteps is for RL agents; {name!r} spends evaluations: "
                                   "give evaluations=K")
    net = make_network(task)
    latency_model = _latency_model(net, name, constraint, latency_model)
    if latency_model is not None:
        latency_model.check_round_to(round_to)
    limit = budget_limit(net, budget, constraint)  # checks the budget before any work
    path = Path(run_dir) if run_dir is not None else None
    settings = _settings(name, task.name, budget, constraint, evaluations, timesteps, seed,
                         val_samples, round_to, latency_model)
    _check_run_dir(path, settings, resume)
    if path is not None and latency_model is not None:
        latency_model.save(path / LATENCY_MODEL)
    # an RL agent resumes from its checkpoint and its curve goes on; a search is seeded and
    # cheap next to training, so it starts again (its curve too)
    curve = _Curve(path, on_progress, resume and method.kind == "rl")
    evaluator = make_evaluator(task, val_samples)
    fraction = 1.0
    if method.kind == "rl":
        keep, scored, fraction = _run_rl(method, task, budget, constraint, evaluations,
                                         timesteps, seed, path, resume, val_samples, round_to,
                                         latency_model, curve)
        spent = curve.points[-1][0] if curve.points else 0
    elif method.kind == "search":
        keep, scored, fraction = _run_search(method, net, evaluator, budget, constraint,
                                             evaluations, seed, round_to, curve)
    else:
        heuristic = uniform if name == "uniform" else global_magnitude
        keep = heuristic(net, budget, constraint, round_to=round_to)
        scored, spent = {}, 0
    metric = net.metric(keep, constraint)
    if "val_accuracy" not in scored:  # heuristics, and searches' best (a cache hit)
        scored["val_accuracy"] = float(evaluator.evaluate_keep(net, keep).accuracy)
        if method.kind == "heuristic":
            spent = evaluator.evaluations
            curve.record(spent, scored["val_accuracy"] if metric <= limit else None)
    if method.kind == "search":  # the final state's score included (a cache hit if seen)
        spent = curve.offset + evaluator.evaluations
        curve.record(spent, scored["val_accuracy"] if metric <= limit else None)
    macs, params = net.price(keep)
    result = MethodResult(
        method=name, task=task.name, env_id=method.env_id, budget=float(budget),
        constraint=constraint, seed=seed, keep=_plain_keep(keep), importance=net.importance,
        val_samples=val_samples, bn_recalibration=evaluator.bn_recalibration, macs=int(macs),
        params=int(params), macs_ratio=macs / net.base_macs,
        params_ratio=params / net.base_params, feasible=bool(metric <= limit),
        val_accuracy=float(scored["val_accuracy"]), evaluations=int(spent),
        wall_time_s=round(curve.elapsed, 3), feasible_fraction=float(fraction),
        history=list(curve.points))
    if path is not None:
        _write_run(path, result)
    return result


def _plain_keep(keep) -> list:
    """A keep state in plain JSON types: counts, or kept channel indices per group."""
    out = []
    for k in keep:
        if isinstance(k, (int, np.integer)):
            out.append(int(k))
        else:
            arr = np.asarray(k)
            out.append(np.flatnonzero(arr).tolist() if arr.dtype == bool else
                       [int(i) for i in arr])
    return out


def _write_run(path: Path, result: MethodResult) -> None:
    from agents.results import write_results

    write_results(path / "results.csv", [result.row()])
    write_json_atomic({"accuracy": result.val_accuracy, "keep_state": result.keep,
                       "macs_ratio": result.macs_ratio, "params_ratio": result.params_ratio,
                       "feasible": result.feasible, "evaluations": result.evaluations},
                      path / "best.json")
