"""The searches every RL pruning result is compared against (CompilerGym keeps its random
search in the engine too).

- ``uniform``: the same fraction of channels kept in every group (the largest that fits).
- ``global-magnitude`` (:func:`global_magnitude`): one importance threshold across the
  whole network (scores are group-normalised), so unimportant channels go first wherever
  they are.
- ``random-search`` (:func:`random_search`): random per-group ratios scaled into the
  budget, best validation accuracy of ``trials`` candidates (a strong baseline for small
  search spaces).

All three work on a :class:`prune_gym.PrunableNetwork` and meet the budget exactly as the
environments price it, so their numbers sit in the same table as an agent's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from prune_gym.arguments import check_int
from prune_gym.bisection import last_fitting
from prune_gym.budget import BoundBudget, as_budget
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.network import PrunableNetwork

BASELINES = ("uniform", "global-magnitude", "random-search")  # their one spelling


@dataclass
class BaselineResult:
    """One baseline's pruned state and how it scores."""

    method: str
    keep: list[int]
    macs_ratio: float
    params_ratio: float
    val_accuracy: float
    evaluations: int

    def as_dict(self) -> dict:
        return asdict(self)


def _bound(net: PrunableNetwork, budget, constraint: str, round_to, latency_model,
           importance: str | None = None) -> BoundBudget:
    """The budget (a :class:`~prune_gym.budget.Budget` or a fraction with its constraint,
    ``round_to`` and latency model) bound to ``net``: checked and refused in one place."""
    return as_budget(budget, constraint, round_to, latency_model).bind(net,
                                                                       importance=importance)


def _scaled(bound: BoundBudget, fractions: np.ndarray, scale: float) -> list[int]:
    return bound.rounded(np.array([max(1, min(g.size, int(math.floor(g.size * f * scale))))
                                   for g, f in zip(bound.net.groups, fractions)])).tolist()


def largest_scale(bound: BoundBudget, fractions, iters: int = 30) -> list[int]:
    """Largest scale of ``fractions`` whose keep state meets the budget (metric is
    monotone, rounding too)."""
    def fits(scale: float) -> bool:
        return bound.feasible(_scaled(bound, fractions, scale))

    hi = 1.0 / max(float(np.min(fractions)), 1e-9)
    return _scaled(bound, fractions, last_fitting(fits, 0.0, hi, iters=iters))


def uniform(net: PrunableNetwork, budget, constraint: str = "macs",
            round_to: int | None = None, latency_model=None) -> list[int]:
    """Keep the same (largest feasible) fraction of every group; with ``round_to``, every
    kept count rounded to a multiple of it (``prune_gym.keep.round_counts``).

    ``budget``: a fraction (with ``constraint``, ``round_to`` and, for a latency budget,
    ``latency_model``) or a :class:`prune_gym.budget.Budget`; the same for every search.
    """
    bound = _bound(net, budget, constraint, round_to, latency_model)
    return largest_scale(bound, np.ones(len(net.groups)))


def global_magnitude(net: PrunableNetwork, budget, constraint: str = "macs",
                     importance: str | None = None, round_to: int | None = None,
                     latency_model=None) -> list[int]:
    """Drop the globally least important channels until the budget holds (``round_to``: as
    for ``uniform``)."""
    bound = _bound(net, budget, constraint, round_to, latency_model, importance)
    scores = [net.scores(i, importance) for i in range(len(net.groups))]
    thresholds = np.unique(np.concatenate(scores))

    def keep_at(t: float) -> list[int]:
        return bound.rounded(np.array([max(1, int((s >= t).sum())) for s in scores])).tolist()

    def fits(i: int) -> bool:  # i-th largest threshold: fitting holds up to some i
        return bound.feasible(keep_at(thresholds[-1 - i]))

    keep = keep_at(thresholds[-1 - last_fitting(fits, 0, len(thresholds) - 1)])
    if not bound.feasible(keep):  # all thresholds too loose
        keep = bound.floor()
    return keep


def random_search(net: PrunableNetwork, evaluator: Evaluator, budget,
                  constraint: str = "macs", trials: int = 20, seed: int = 0,
                  on_evaluation: Callable[[list[int], float], None] | None = None,
                  round_to: int | None = None, latency_model=None) -> list[int]:
    """Best of ``trials`` evaluated random per-group ratio vectors, each scaled into the
    budget.

    ``trials`` is the number of evaluations spent, exactly: a candidate whose keep state was
    already evaluated (the evaluator's cache answers it for free) is drawn again, so random
    search can sit beside an agent that used the same number of evaluations. On a network
    too small to have ``trials`` distinct states it stops after ``100 * trials`` draws.
    ``on_evaluation(keep, accuracy)`` is called after each new evaluation. ``round_to``: as
    for ``uniform``.
    """
    trials = check_int(trials, "trials", minimum=1, meaning="evaluations to spend")
    bound = _bound(net, budget, constraint, round_to, latency_model)
    rng = np.random.default_rng(seed)
    best, best_acc = None, -1.0
    start = evaluator.evaluations
    for _ in range(100 * trials):
        if evaluator.evaluations - start >= trials:
            break
        keep = largest_scale(bound, rng.uniform(0.2, 1.0, len(net.groups)))
        before = evaluator.evaluations
        accuracy = evaluator.evaluate_keep(net, keep).accuracy
        if evaluator.evaluations == before and best is not None:
            continue  # seen before: costs nothing, counts nothing
        if on_evaluation is not None:
            on_evaluation(keep, float(accuracy))
        if accuracy > best_acc:
            best, best_acc = keep, accuracy
    return best


def run_baselines(net: PrunableNetwork, evaluator: Evaluator, budget: float,
                  constraint: str = "macs", trials: int = 20, seed: int = 0,
                  methods: tuple[str, ...] = BASELINES) -> list[BaselineResult]:
    """Run each baseline and score its state on the evaluator's validation data.

    ``methods``: names from :data:`BASELINES` (the underscore spellings of earlier releases,
    ``global_magnitude`` and ``random_search``, still work, with a DeprecationWarning).
    """
    old = [m for m in methods if isinstance(m, str) and m.replace("_", "-") in BASELINES
           and m not in BASELINES]
    if old:
        warnings.warn(f"methods={old}: the baselines are spelt with hyphens now "
                      f"({', '.join(BASELINES)})", DeprecationWarning, stacklevel=2)
        methods = tuple(m.replace("_", "-") if m in old else m for m in methods)
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise InvalidArgumentError(f"methods={unknown} are not baselines; choose from "
                                   f"{', '.join(BASELINES)}")
    full = [g.size for g in net.groups]
    results = []
    for method in methods:
        before = evaluator.evaluations
        if method == "uniform":
            keep = uniform(net, budget, constraint)
        elif method == "global-magnitude":
            keep = global_magnitude(net, budget, constraint)
        else:
            keep = random_search(net, evaluator, budget, constraint, trials, seed)
        accuracy = evaluator.evaluate_keep(net, keep).accuracy
        results.append(BaselineResult(
            method, [int(k) for k in keep], net.macs(keep) / net.macs(full),
            net.params(keep) / net.params(full), accuracy, evaluator.evaluations - before))
    return results
