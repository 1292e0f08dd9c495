"""The budget: how much of which metric a pruned network may keep, and how counts round.

A :class:`Budget` is a value (a fraction of the original metric, the constraint, the
``round_to`` multiple and, for ``constraint="latency"``, the latency model that prices it),
checked once when it is made. Bound to a network (:meth:`Budget.bind`) it becomes a
:class:`BoundBudget`: the limit, the floor (the smallest state that can be reached),
feasibility, the violation margin and rounding, all in one place. The environments, the
searches, the methods, RL-Pruner, the replay of ``results.csv`` and the command line all
ask it, so every one of them prices and refuses a budget the same way, with one message per
mistake.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from prune_gym.arguments import check_int
from prune_gym.cost import check_budget
from prune_gym.errors import InvalidArgumentError
from prune_gym.keep import round_counts
from prune_gym.latency_model import LatencyModel, load_latency_model
from prune_gym.network import CONSTRAINTS, PrunableNetwork

__all__ = ["CONSTRAINTS", "BoundBudget", "Budget", "as_budget"]


@dataclass(frozen=True)
class Budget:
    """What a pruned network may keep.

    Args:
        fraction: of the unpruned network's ``constraint`` metric, in (0, 1].
        constraint: ``"macs"``, ``"params"`` or ``"latency"`` (priced by ``latency_model``).
        round_to: every kept count a multiple of this (``prune_gym.keep.round_counts``), or
            ``None``.
        latency_model: with ``constraint="latency"``: a
            :class:`~prune_gym.latency_model.LatencyModel` of the network or the JSON file it
            was saved to (read here, once). Refused with any other constraint.
        argument: the name the fraction was given under, for messages (e.g. ``"--budget"``).
    """

    fraction: float
    constraint: str = "macs"
    round_to: int | None = None
    latency_model: LatencyModel | None = None
    argument: str = "budget"

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the checked values replace what was given
        set_(self, "fraction", check_budget(self.fraction, self.argument))
        if not isinstance(self.constraint, str) or self.constraint not in CONSTRAINTS:
            raise InvalidArgumentError(f"constraint={self.constraint!r} is not known; choose "
                                       f"one of {', '.join(CONSTRAINTS)}")
        set_(self, "round_to", check_int(self.round_to, "round_to", minimum=1, optional=True,
                                         meaning="the multiple every kept count is rounded to"))
        if self.latency_model is not None:
            if self.constraint != "latency":
                raise InvalidArgumentError(
                    f"latency_model is read only with constraint='latency'; got "
                    f"constraint={self.constraint!r}")
            set_(self, "latency_model", load_latency_model(self.latency_model))

    def with_fraction(self, fraction: float) -> Budget:
        """The same budget for another fraction."""
        return replace(self, fraction=fraction)

    def bind(self, net: PrunableNetwork, *, importance: str | None = None,
             who: str = "", rounds: bool = True, check: bool = True) -> BoundBudget:
        """This budget priced on ``net``.

        Args:
            net: the analysed network.
            importance: which channels a count keeps (default: the network's).
            who: the method or environment the budget is for, for messages.
            rounds: whether ``who`` sets channel counts (``round_to`` is refused where it
                chooses channels one by one).
            check: refuse a budget that one channel per group (rounded) cannot meet.
        """
        return BoundBudget(self, net, importance, who, rounds, check)


def as_budget(budget, constraint: str = "macs", round_to: int | None = None,
              latency_model=None, argument: str = "budget") -> Budget:
    """``budget`` if it is a :class:`Budget` already (then the other arguments must be left
    at their defaults), else a :class:`Budget` made of the arguments."""
    if isinstance(budget, Budget):
        if (constraint, round_to, latency_model) != ("macs", None, None):
            raise InvalidArgumentError(
                "budget is a Budget already: give constraint, round_to and latency_model "
                "inside it (Budget(fraction, constraint, round_to, latency_model)), not again")
        return budget
    return Budget(budget, constraint, round_to, latency_model, argument)


class BoundBudget:
    """A :class:`Budget` on one network: limit, floor, feasibility, rounding.

    Attributes:
        budget: the budget.
        net: the network it prices.
        base: the unpruned network's metric.
        limit: ``budget.fraction * base``; a state is feasible when its metric is at most
            this (metrics are integers, so this is the same as at most its floor).
    """

    def __init__(self, budget: Budget, net: PrunableNetwork, importance: str | None,
                 who: str, rounds: bool, check: bool):
        self.budget, self.net, self.importance, self.who = budget, net, importance, who
        if budget.round_to is not None and not rounds:
            raise InvalidArgumentError(
                f"round_to is not for {who or 'this method'} (round_to={budget.round_to}): it "
                "chooses channels one by one, so there is no count to round; use a method "
                "that sets counts (LayerRatio-v0, DNNGraph-v0, the baselines), or round a "
                "finished keep state with prune_gym.keep.round_counts")
        self.latency_model = budget.latency_model
        if budget.constraint == "latency":
            if self.latency_model is None:  # the network's own (set_latency_model, deprecated)
                self.latency_model = net.latency_model
            if self.latency_model is not None:  # without one, metric() below says what to do
                self.latency_model.check_network(net)
                self.latency_model.check_round_to(budget.round_to)
        self.sizes = np.array([g.size for g in net.groups], dtype=np.int64)
        self.base = self.metric(self.sizes.tolist())
        self.limit = budget.fraction * self.base
        if check:
            self.check_reachable(np.ones(len(self.sizes), dtype=np.int64))

    @property
    def fraction(self) -> float:
        return self.budget.fraction

    @property
    def constraint(self) -> str:
        return self.budget.constraint

    @property
    def round_to(self) -> int | None:
        return self.budget.round_to

    def metric(self, keep) -> int:
        """The constrained metric of a keep state, in closed form."""
        return self.net.metric(keep, self.constraint, self.importance,
                               latency_model=self.latency_model)

    def feasible(self, keep) -> bool:
        """Whether ``keep`` meets the budget."""
        return self.metric(keep) <= self.limit

    def fits(self, metric: int) -> bool:
        """Whether a metric already priced meets the budget."""
        return metric <= self.limit

    def margin(self, metric: int) -> float:
        """``(metric - limit) / limit``: negative under budget, positive over it."""
        return float(metric - self.limit) / self.limit

    def ratio(self, metric: int) -> float:
        """A metric as a fraction of the unpruned network's."""
        return metric / self.base

    def rounded(self, counts, sizes: Sequence[int] | None = None) -> np.ndarray:
        """``counts`` rounded to multiples of ``round_to`` (``sizes``: of the groups they
        are for, default all); without ``round_to``, ``counts`` itself (no copy: this runs
        on every step and inside every bisection)."""
        if self.round_to is None:
            return counts
        return round_counts(counts, self.sizes if sizes is None else sizes, self.round_to)

    def round_one(self, group: int, count: int) -> int:
        """One group's count, rounded."""
        if self.round_to is None:
            return count
        return int(round_counts([count], self.sizes[group:group + 1], self.round_to)[0])

    def floor(self, counts=None) -> list[int]:
        """The smallest state reachable: ``counts`` (default one channel per group) rounded."""
        counts = np.ones(len(self.sizes), dtype=np.int64) if counts is None else counts
        return [int(c) for c in self.rounded(np.asarray(counts, dtype=np.int64))]

    def check_reachable(self, counts=None, allows: str = "one channel") -> None:
        """Refuse a budget that the floor (``counts``, rounded) does not meet.

        Args:
            counts: the fewest channels per group the method can reach (default one).
            allows: what ``counts`` is, for the message.
        """
        floor = self.floor(counts)
        metric = self.metric(floor)
        if self.fits(metric):
            return
        smallest = self.ratio(metric)
        rounding = (f", rounded to multiples of round_to={self.round_to}"
                    if self.round_to is not None else "")
        raise InvalidArgumentError(
            f"{self.budget.argument}={self.fraction} cannot be reached: with every group at "
            f"{allows}{rounding}, the network keeps {smallest:.4f} of its original "
            f"{self.constraint}; choose {self.budget.argument} >= "
            f"{math.ceil(smallest * 1e4) / 1e4}" + (" or a smaller round_to" if rounding else ""))

    def settings(self) -> dict:
        """What a run directory records of the budget (a resume must price it alike)."""
        model = self.latency_model
        return {"budget": self.fraction, "constraint": self.constraint,
                "round_to": self.round_to,
                "latency_model": None if model is None
                else [*model.coefficients, model.base_s]}
