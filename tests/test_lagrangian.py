"""The Lagrange multiplier (agents.common.lagrangian): both rules against values worked out
by hand from their definitions, falling as well as rising, the bound, state round trips,
and every bad argument."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from agents.common.lagrangian import Lagrangian, costs_from_infos
from prune_gym.errors import CheckpointError, InvalidArgumentError, PruneGymError


def adam_by_hand(lam: float, errors: list[float], lr: float, lam_max: float = 100.0
                 ) -> list[float]:
    """Adam (beta 0.9/0.999, eps 1e-8) descending on -lambda * e, projected onto [0, max]."""
    m = v = 0.0
    out = []
    for t, e in enumerate(errors, start=1):
        g = -e  # d/d lambda of -lambda * e
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        step = lr * (m / (1 - 0.9 ** t)) / (math.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        lam = min(max(lam - step, 0.0), lam_max)
        out.append(lam)
    return out


# -- "gradient" ------------------------------------------------------------------------------
def test_gradient_sgd_is_projected_ascent() -> None:
    lag = Lagrangian(cost_limit=0.5, rule="gradient", optimizer="sgd")  # lr 0.035, init 0.001
    assert lag.value == pytest.approx(0.001)
    assert lag.update(1.5) == pytest.approx(0.001 + 0.035 * 1.0)
    assert lag.update(2.5) == pytest.approx(0.036 + 0.035 * 2.0)
    assert lag.update(0.0) == pytest.approx(0.106 - 0.035 * 0.5)  # under the limit: falls
    assert lag.update(-10.0) == 0.0  # projected onto lambda >= 0
    assert lag.updates == 4


def test_gradient_adam_matches_hand_computed_adam_and_falls() -> None:
    costs = [1.0, 1.0, 0.4] + [-0.5] * 12  # signed: negative = under budget
    lag = Lagrangian(cost_limit=0.0, rule="gradient")  # OmniSafe: Adam, lr 0.035, init 0.001
    got = [lag.update(c) for c in costs]
    assert got == pytest.approx(adam_by_hand(0.001, costs, 0.035), rel=1e-9, abs=1e-12)
    assert got[0] == pytest.approx(0.001 + 0.035, rel=1e-6)  # Adam's first step is ~lr
    # Adam's momentum carries it up a few more updates, then it falls to the bound 0
    assert max(got) > 0.13 and got[-1] == 0.0
    assert all(b < a for a, b in zip(got[6:], got[7:]))


def test_gradient_upper_bound() -> None:
    lag = Lagrangian(0.0, "gradient", lambda_init=0.5, lambda_max=1.0, optimizer="sgd", lr=10.0)
    assert lag.update(3.0) == 1.0
    assert lag.update(-0.01) == pytest.approx(1.0 - 0.1)


# -- "pid" ------------------------------------------------------------------------------------
def test_pid_matches_stooke_update_by_hand_and_falls() -> None:
    # defaults kp 0.1, ki 0.01, kd 0.01, ema 0.95, delay 10, init 0.001 (OmniSafe CPPOPID)
    lag = Lagrangian(cost_limit=0.5, rule="pid")
    assert lag.value == pytest.approx(0.001)
    # J=1.5, e=1: I=0.011, P=0.05, D=0.075 (vs D 10 updates ago: 0) -> 0.005+0.011+0.00075
    assert lag.update(1.5) == pytest.approx(0.01675)
    # J=1.5: I=0.021, P=0.0975, D=0.14625 -> 0.00975 + 0.021 + 0.0014625
    assert lag.update(1.5) == pytest.approx(0.0322125)
    # J=0, e=-0.5: I=0.016, P=0.067625, D=0.1389375 -> lambda falls
    assert lag.update(0.0) == pytest.approx(0.0067625 + 0.016 + 0.001389375)
    state = lag.state_dict()
    assert state["integral"] == pytest.approx(0.016)
    assert state["d_history"] == pytest.approx([0.0, 0.075, 0.14625, 0.1389375])


def test_pid_derivative_uses_the_delayed_cost() -> None:
    lag = Lagrangian(0.0, "pid", lambda_init=0.0, kp=0.0, ki=0.0, kd=1.0, ema=0.5, delay=2)
    assert lag.update(1.0) == pytest.approx(0.5)  # D=0.5 vs history [0]
    assert lag.update(1.0) == pytest.approx(0.75)  # D=0.75 vs 0 (two updates ago)
    assert lag.update(1.0) == pytest.approx(0.875 - 0.5)  # D=0.875 vs 0.5
    assert lag.update(0.0) == pytest.approx(0.0)  # D falls: a falling cost adds nothing


def test_pid_bound_and_anti_windup() -> None:
    lag = Lagrangian(0.0, "pid", lambda_max=1.0, kp=0.0, ki=1.0, kd=0.0)
    for _ in range(20):
        assert lag.update(5.0) <= 1.0
    assert lag.value == 1.0
    # the integral was held at the bound, so one update under the limit already lowers lambda
    assert lag.update(-0.25) == pytest.approx(0.75)


# -- state -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule, kwargs", [("gradient", {}), ("gradient", {"optimizer": "sgd"}),
                                          ("pid", {"delay": 3})])
def test_state_round_trip_continues_identically(rule, kwargs) -> None:
    a = Lagrangian(0.2, rule, **kwargs)
    for c in (1.0, 0.7, -0.3, 2.0):
        a.update(c)
    state = a.state_dict()
    json.dumps(state)  # plain Python: JSON and torch.load(weights_only=True) both work
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    b = Lagrangian(0.2, rule, **kwargs)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.value == a.value and b.updates == a.updates
    for c in (0.5, -1.0, 3.0, 0.1):
        assert b.update(c) == pytest.approx(a.update(c), rel=1e-12, abs=1e-15)


def test_load_state_of_the_other_rule_or_a_broken_state() -> None:
    pid = Lagrangian(0.0, "pid")
    with pytest.raises(CheckpointError, match="'pid' rule"):
        Lagrangian(0.0, "gradient").load_state_dict(pid.state_dict())
    broken = pid.state_dict()
    del broken["integral"]
    with pytest.raises(CheckpointError, match="integral"):
        Lagrangian(0.0, "pid").load_state_dict(broken)
    with pytest.raises(CheckpointError):
        pid.load_state_dict([1, 2])  # type: ignore[arg-type]


def test_config_rebuilds_an_equal_multiplier() -> None:
    a = Lagrangian(0.3, "pid", kp=0.2, delay=4, lambda_max=5.0)
    config = a.config()
    b = Lagrangian(config.pop("cost_limit"), config.pop("rule"), **config)
    assert b.config() == a.config()


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"cost_limit": -0.1}, "cost_limit"),
    ({"cost_limit": float("nan")}, "cost_limit"),
    ({"cost_limit": "1"}, "cost_limit"),
    ({"rule": "adam"}, "rule"),
    ({"lambda_max": 0.0}, "lambda_max"),
    ({"lambda_max": float("inf")}, "lambda_max"),
    ({"lambda_init": -1.0}, "lambda_init"),
    ({"lambda_init": 200.0}, "lambda_init"),
    ({"lr": -0.01}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"kp": 0.1}, "kp"),  # a PID gain given to the gradient rule
    ({"rule": "pid", "kp": -0.1}, "kp"),
    ({"rule": "pid", "ki": float("nan")}, "ki"),
    ({"rule": "pid", "kd": -1}, "kd"),
    ({"rule": "pid", "ema": 1.0}, "ema"),
    ({"rule": "pid", "ema": -0.5}, "ema"),
    ({"rule": "pid", "delay": 0}, "delay"),
    ({"rule": "pid", "delay": 2.5}, "delay"),
    ({"rule": "pid", "lr": 0.1}, "lr"),  # a gradient argument given to the PID rule
])
def test_bad_arguments_name_the_argument(kwargs, name) -> None:
    with pytest.raises(InvalidArgumentError, match=name):
        Lagrangian(**kwargs)


def test_non_finite_cost_is_rejected() -> None:
    lag = Lagrangian()
    for bad in (float("nan"), float("inf"), "0.5"):
        with pytest.raises(InvalidArgumentError, match="mean_episode_cost"):
            lag.update(bad)  # type: ignore[arg-type]
    assert lag.updates == 0 and lag.value == pytest.approx(0.001)


def test_costs_from_infos() -> None:
    assert costs_from_infos([{"cost": 0.5}, {"cost": -1}], "cost").tolist() == [0.5, -1.0]
    with pytest.raises(PruneGymError, match=r"'signed_cost'.*\['cost', 'step'\]"):
        costs_from_infos([{"cost": 0.0, "step": 1}], "signed_cost")
    with pytest.raises(InvalidArgumentError, match="finite"):
        costs_from_infos([{"cost": float("nan")}], "cost")
    with pytest.raises(InvalidArgumentError, match="number"):
        costs_from_infos([{"cost": "high"}], "cost")
