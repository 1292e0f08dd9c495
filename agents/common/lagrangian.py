"""The Lagrange multiplier of a constrained MDP, with two update rules.

A Lagrangian agent maximises ``reward - lambda * cost``; ``lambda`` is raised while the
mean episode cost exceeds ``cost_limit`` and lowered while it is under. One
:class:`Lagrangian` object holds ``lambda`` and whatever its rule needs to continue after a
save; :class:`agents.PPOLagrangian` and :class:`agents.LagrangianRewardWrapper` each own one
and call :meth:`Lagrangian.update` once per rollout (or update interval) with the mean cost
of the episodes that ended in it.

Rules:

- ``"gradient"``: projected gradient ascent on ``lambda * (J_c - d)``. As in OmniSafe's
  PPOLag (defaults ``lambda_init=0.001``, ``lr=0.035``), the step is taken by Adam, which is
  why the default is ``optimizer="adam"``: Adam's step is about ``lr`` whatever the size of
  the violation, so ``lr=0.035`` means the same thing for a cost in [0, 1] and for one in
  [0, 100], and OmniSafe's tuned defaults carry over. ``optimizer="sgd"`` is the textbook
  rule ``lambda <- lambda + lr * (J_c - d)``.
- ``"pid"``: Stooke et al. 2020, "Responsive Safety in RL by PID Lagrangian Methods", as in
  OmniSafe's CPPOPID (defaults ``kp=0.1, ki=0.01, kd=0.01, ema=0.95, delay=10``):
  with ``e = J_c - d``, ``I <- clip(I + ki * e, 0, lambda_max)``, ``P <- ema * P + (1 - ema)
  * e``, ``D <- ema * D + (1 - ema) * J_c`` and ``lambda = clip(kp * P + I + kd *
  max(0, D - D_{delay updates ago}), 0, lambda_max)``. Clipping ``I`` at ``lambda_max``
  (anti-windup) is our addition: without it a long violation winds ``I`` far past the bound
  and ``lambda`` stays pinned there long after the constraint holds.

Both rules project ``lambda`` onto ``[0, lambda_max]``. The explicit upper bound is ours:
OmniSafe's ``penalty_max`` is not applied when the objective is normalised by
``1 + lambda``. ``lambda`` can fall as well as rise, but only if the cost it is given can
be under the limit: with a cost that is never negative and ``cost_limit=0`` it only grows.
prune-gym's ``info["signed_cost"]`` (``metric / limit - 1`` at the end of an episode,
negative when the network ends under its budget) with ``cost_limit=0`` lets it fall too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from prune_gym.arguments import check_number
from prune_gym.errors import CheckpointError, InvalidArgumentError

RULES = ("gradient", "pid")
OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
# Each rule's own arguments and their defaults (OmniSafe's PPOLag and CPPOPID).
RULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gradient": {"lr": 0.035, "optimizer": "adam"},
    "pid": {"kp": 0.1, "ki": 0.01, "kd": 0.01, "ema": 0.95, "delay": 10},
}
STATE_VERSION = 1


class Lagrangian:
    """A Lagrange multiplier ``lambda >= 0`` for one cost constraint ``J_c <= cost_limit``.

    Args:
        cost_limit: the limit ``d`` on the mean episode cost (>= 0).
        rule: ``"gradient"`` or ``"pid"`` (see the module docstring).
        lambda_init: ``lambda`` before any update (OmniSafe: 0.001); for ``"pid"`` it seeds
            the integral term, as in OmniSafe.
        lambda_max: the upper bound of ``lambda`` (> 0, finite).
        **rule_kwargs: the rule's own arguments: ``lr`` (>= 0) and ``optimizer``
            (``"adam"`` or ``"sgd"``) for ``"gradient"``; ``kp``, ``ki``, ``kd`` (>= 0),
            ``ema`` (in [0, 1)) and ``delay`` (int >= 1) for ``"pid"``.

    Raises:
        InvalidArgumentError: an unknown rule or rule argument, a negative limit, gain or
            rate, or any non-finite number; the message names the argument.
    """

    def __init__(self, cost_limit: float = 0.0, rule: str = "gradient", *,
                 lambda_init: float = 0.001, lambda_max: float = 100.0, **rule_kwargs: Any):
        if not isinstance(rule, str) or rule not in RULES:
            raise InvalidArgumentError(f"lagrangian rule {rule!r} is unknown; use one of "
                                       f"{', '.join(map(repr, RULES))}")
        unknown = sorted(set(rule_kwargs) - set(RULE_DEFAULTS[rule]))
        if unknown:
            raise InvalidArgumentError(
                f"lagrangian_kwargs {unknown} are not arguments of the {rule!r} rule; it takes "
                f"lambda_init, lambda_max and {sorted(RULE_DEFAULTS[rule])}")
        self.rule = rule
        self.cost_limit = check_number(cost_limit, "cost_limit", low=0.0, low_open=False)
        self.lambda_max = check_number(lambda_max, "lambda_max", low=0.0)
        self.lambda_init = check_number(lambda_init, "lambda_init", low=0.0, low_open=False,
                                        high=self.lambda_max, meaning="at most lambda_max")
        options = {**RULE_DEFAULTS[rule], **rule_kwargs}
        self.updates = 0
        if rule == "gradient":
            self.lr = check_number(options["lr"], "lr", low=0.0, low_open=False)
            if options["optimizer"] not in OPTIMIZERS:
                raise InvalidArgumentError(f"optimizer={options['optimizer']!r} is unknown; use "
                                           f"one of {sorted(OPTIMIZERS)}")
            self.optimizer_name = options["optimizer"]
            # lambda as a 0-d float64 tensor stepped by a torch optimizer (as OmniSafe does):
            # the optimizer is torch's, not a hand-written one.
            self._param = torch.nn.Parameter(torch.tensor(self.lambda_init, dtype=torch.float64))
            self._optimizer = OPTIMIZERS[self.optimizer_name]([self._param], lr=self.lr)
        else:
            for gain in ("kp", "ki", "kd"):
                setattr(self, gain, check_number(options[gain], gain, low=0.0, low_open=False))
            self.ema = check_number(options["ema"], "ema", low=0.0, low_open=False, high=1.0)
            if self.ema == 1.0:
                raise InvalidArgumentError("ema=1.0 would never move the P and D averages; use "
                                           "a number in [0, 1), e.g. 0.95")
            delay = options["delay"]
            if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 1:
                raise InvalidArgumentError(f"delay must be an int >= 1 (updates between the two "
                                           f"costs the D term compares); got {delay!r}")
            self.delay = int(delay)
            self._integral = self.lambda_init
            self._p = 0.0  # EMA of the error J_c - d
            self._d = 0.0  # EMA of the cost J_c
            self._d_history: deque[float] = deque([0.0], maxlen=self.delay)
            self._value = self.lambda_init

    @property
    def value(self) -> float:
        """The current multiplier ``lambda``."""
        if self.rule == "gradient":
            return float(self._param.detach())
        return self._value

    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to build an equal multiplier."""
        out: dict[str, Any] = {"cost_limit": self.cost_limit, "rule": self.rule,
                               "lambda_init": self.lambda_init, "lambda_max": self.lambda_max}
        for name in RULE_DEFAULTS[self.rule]:
            out[name] = getattr(self, "optimizer_name" if name == "optimizer" else name)
        return out

    def update(self, mean_episode_cost: float) -> float:
        """One step of the rule from the mean cost ``J_c`` of the episodes just finished.

        Call it once per rollout; a rollout in which no episode ended gives no ``J_c`` and
        should not call it.

        Returns:
            The new ``lambda``.
        """
        cost = check_number(mean_episode_cost, "mean_episode_cost")
        error = cost - self.cost_limit
        if self.rule == "gradient":
            # ascent on lambda * (J_c - d) is descent on its negative
            self._optimizer.zero_grad()
            (-self._param * error).backward()
            self._optimizer.step()
            with torch.no_grad():
                self._param.clamp_(0.0, self.lambda_max)
        else:
            a = self.ema
            self._integral = min(max(0.0, self._integral + self.ki * error), self.lambda_max)
            self._p = a * self._p + (1 - a) * error
            self._d = a * self._d + (1 - a) * cost
            rise = max(0.0, self._d - self._d_history[0])
            raw = self.kp * self._p + self._integral + self.kd * rise
            self._value = min(max(0.0, raw), self.lambda_max)
            self._d_history.append(self._d)
        self.updates += 1
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: ``lambda``, the rule's state, and the config.

        Plain Python numbers, strings and lists only, so it saves as JSON and loads with
        ``torch.load(weights_only=True)`` (as SB3 loads a model's parts).
        """
        state: dict[str, Any] = {"version": STATE_VERSION, "rule": self.rule,
                                 "config": self.config(), "lambda": self.value,
                                 "updates": self.updates}
        if self.rule == "gradient":
            opt_state = self._optimizer.state_dict()["state"].get(0, {})
            state["optimizer_state"] = {k: float(v) for k, v in opt_state.items()
                                      if v is not None}
        else:
            state.update(integral=self._integral, p=self._p, d=self._d,
                         d_history=list(self._d_history))
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Continue from :meth:`state_dict`'s output.

        The configuration (limit, gains, rate) stays the one this object was built with, so
        a model loaded with a new ``cost_limit`` keeps it; the rule must match.

        Args:
            state: a dict from :meth:`state_dict`.
            strict: accepted for SB3's ``set_parameters``; a state is always checked.

        Raises:
            CheckpointError: the state is for the other rule or lacks a field.
        """
        del strict  # the state is always checked
        if not isinstance(state, Mapping) or "rule" not in state:
            raise CheckpointError(f"a Lagrangian state must be a dict from state_dict(); got "
                                  f"{type(state).__name__}")
        if state["rule"] != self.rule:
            raise CheckpointError(f"the saved multiplier uses the {state['rule']!r} rule, this "
                                  f"one {self.rule!r}; build it with lagrangian="
                                  f"{state['rule']!r} to load it")
        fields = ("lambda", "updates") + (("optimizer_state",) if self.rule == "gradient" else
                                          ("integral", "p", "d", "d_history"))
        missing = [f for f in fields if f not in state]
        if missing:
            raise CheckpointError(f"the saved multiplier state lacks {missing}; it has "
                                  f"{sorted(state)}")
        self.updates = int(state["updates"])
        lam = min(max(0.0, float(state["lambda"])), self.lambda_max)
        if self.rule == "gradient":
            with torch.no_grad():
                self._param.fill_(lam)
            template = self._optimizer.state_dict()
            saved: Mapping[str, float] = state["optimizer_state"]
            template["state"] = {0: {k: torch.tensor(float(v), dtype=torch.float32 if k == "step"
                                                     else torch.float64)
                                     for k, v in saved.items()}} if saved else {}
            self._optimizer.load_state_dict(template)
        else:
            self._value = lam
            self._integral = float(state["integral"])
            self._p, self._d = float(state["p"]), float(state["d"])
            history: Sequence[float] = state["d_history"]
            self._d_history = deque((float(x) for x in history), maxlen=self.delay)

    def __repr__(self) -> str:
        return (f"Lagrangian(rule={self.rule!r}, lambda={self.value:.6g}, "
                f"cost_limit={self.cost_limit:g}, updates={self.updates})")


def costs_from_infos(infos: Sequence[Mapping[str, Any]], cost_key: str) -> np.ndarray:
    """The per-step cost of each environment of a vector env, read from its ``info``.

    Raises:
        InvalidArgumentError: an ``info`` lacks ``cost_key`` (the message lists the keys it
            has) or its cost is not a finite number.
    """
    costs = np.empty(len(infos), dtype=np.float64)
    for i, info in enumerate(infos):
        if cost_key not in info:
            raise InvalidArgumentError(
                f"cost_key={cost_key!r} is not in the environment's info (env {i} reports "
                f"{sorted(k for k in info if isinstance(k, str))}); pass as cost_key the key "
                "that holds the per-step cost, e.g. prune-gym's 'cost' or 'signed_cost'")
        try:
            costs[i] = float(info[cost_key])
        except (TypeError, ValueError) as err:
            raise InvalidArgumentError(f"info[{cost_key!r}] of env {i} must be a number; got "
                                       f"{info[cost_key]!r}") from err
        if not math.isfinite(costs[i]):
            raise InvalidArgumentError(f"info[{cost_key!r}] of env {i} is {costs[i]}; a cost "
                                       "must be a finite number")
    return costs
