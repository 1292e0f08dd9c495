"""Non-learning baselines every RL pruning result should be compared against.

- ``uniform``: the same fraction of channels kept in every group (the largest that fits).
- ``global_magnitude``: one importance threshold across the whole network (scores are
  group-normalised), so unimportant channels go first wherever they are.
- ``random_search``: random per-group ratios scaled into the budget, best validation
  accuracy of ``trials`` candidates (a strong baseline for small search spaces).

All three work on a :class:`prune_gym.PrunableNetwork` and meet the budget exactly as the
environments price it, so their numbers sit in the same table as an agent's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from prune_gym.arguments import check_int
from prune_gym.bisection import last_fitting
from prune_gym.cost import check_budget
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.keep import round_counts
from prune_gym.network import PrunableNetwork

BASELINES = ("uniform", "global_magnitude", "random_search")


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


def budget_limit(net: PrunableNetwork, budget: float, constraint: str = "macs") -> int:
    """The metric limit for ``budget``; raise if it is out of (0, 1] or unreachable."""
    budget = check_budget(budget)
    smallest = net.min_ratio(constraint)
    if budget < smallest:
        reachable = math.ceil(smallest * 1e4) / 1e4
        raise InvalidArgumentError(
            f"budget={budget} cannot be reached: with every group at one channel the network "
            f"keeps {smallest:.4f} of its {constraint}; use budget >= {reachable}")
    return math.floor(budget * net.metric([g.size for g in net.groups], constraint))


def _rounded(net: PrunableNetwork, keep: list[int], round_to: int | None) -> list[int]:
    if round_to is None:  # inside every bisection of the searches
        return keep
    return round_counts(keep, [g.size for g in net.groups], round_to).tolist()


def _scaled(net: PrunableNetwork, fractions: np.ndarray, scale: float,
            round_to: int | None = None) -> list[int]:
    return _rounded(net, [max(1, min(g.size, int(math.floor(g.size * f * scale))))
                          for g, f in zip(net.groups, fractions)], round_to)


def _check_round_to(net, limit, constraint, round_to) -> int | None:
    """``round_to`` checked. With it, the smallest state keeps ``round_to`` channels per
    group: refuse a budget it cannot meet, as ``budget_limit`` does for one channel."""
    round_to = check_int(round_to, "round_to", minimum=1, optional=True,
                         meaning="the multiple every kept count is rounded to")
    floor = _rounded(net, [1] * len(net.groups), round_to)
    if round_to is not None and net.metric(floor, constraint) > limit:
        smallest = net.metric(floor, constraint) / net.metric([g.size for g in net.groups],
                                                              constraint)
        raise InvalidArgumentError(
            f"round_to={round_to}: with every group at {round_to} channels the network keeps "
            f"{smallest:.4f} of its {constraint}, over the budget; use a larger budget or a "
            "smaller round_to")
    return round_to


def _largest_scale(net, fractions, limit, constraint, iters: int = 30,
                   round_to: int | None = None) -> list[int]:
    """Largest scale of ``fractions`` whose keep state fits ``limit`` (metric is monotone,
    rounding too)."""
    def fits(scale: float) -> bool:
        return net.metric(_scaled(net, fractions, scale, round_to), constraint) <= limit

    hi = 1.0 / max(float(np.min(fractions)), 1e-9)
    return _scaled(net, fractions, last_fitting(fits, 0.0, hi, iters=iters), round_to)


def uniform(net: PrunableNetwork, budget: float, constraint: str = "macs",
            round_to: int | None = None) -> list[int]:
    """Keep the same (largest feasible) fraction of every group; with ``round_to``, every
    kept count rounded to a multiple of it (``prune_gym.keep.round_counts``)."""
    limit = budget_limit(net, budget, constraint)
    round_to = _check_round_to(net, limit, constraint, round_to)
    return _largest_scale(net, np.ones(len(net.groups)), limit, constraint, round_to=round_to)


def global_magnitude(net: PrunableNetwork, budget: float, constraint: str = "macs",
                     importance: str | None = None, round_to: int | None = None) -> list[int]:
    """Drop the globally least important channels until the budget holds (``round_to``: as
    for ``uniform``)."""
    limit = budget_limit(net, budget, constraint)
    round_to = _check_round_to(net, limit, constraint, round_to)
    scores = [net.scores(i, importance) for i in range(len(net.groups))]
    thresholds = np.unique(np.concatenate(scores))

    def keep_at(t: float) -> list[int]:
        return _rounded(net, [max(1, int((s >= t).sum())) for s in scores], round_to)

    def fits(i: int) -> bool:  # i-th largest threshold: fitting holds up to some i
        return net.metric(keep_at(thresholds[-1 - i]), constraint, importance) <= limit

    keep = keep_at(thresholds[-1 - last_fitting(fits, 0, len(thresholds) - 1)])
    if net.metric(keep, constraint, importance) > limit:  # all thresholds too loose
        keep = _rounded(net, [1] * len(net.groups), round_to)
    return keep


def random_search(net: PrunableNetwork, evaluator: Evaluator, budget: float,
                  constraint: str = "macs", trials: int = 20, seed: int = 0,
                  on_evaluation: Callable[[list[int], float], None] | None = None,
                  round_to: int | None = None) -> list[int]:
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
    limit = budget_limit(net, budget, constraint)
    round_to = _check_round_to(net, limit, constraint, round_to)
    rng = np.random.default_rng(seed)
    best, best_acc = None, -1.0
    start = evaluator.evaluations
    for _ in range(100 * trials):
        if evaluator.evaluations - start >= trials:
            break
        keep = _largest_scale(net, rng.uniform(0.2, 1.0, len(net.groups)), limit, constraint,
                              round_to=round_to)
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
    """Run each baseline and score its state on the evaluator's validation data."""
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
        elif method == "global_magnitude":
            keep = global_magnitude(net, budget, constraint)
        else:
            keep = random_search(net, evaluator, budget, constraint, trials, seed)
        accuracy = evaluator.evaluate_keep(net, keep).accuracy
        results.append(BaselineResult(
            method, [int(k) for k in keep], net.macs(keep) / net.macs(full),
            net.params(keep) / net.params(full), accuracy, evaluator.evaluations - before))
    return results
