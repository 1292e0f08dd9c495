"""The one bisection helper and the one set of argument checks, on their own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prune_gym.arguments import check_choice, check_int, check_number, check_size
from prune_gym.bisection import last_fitting
from prune_gym.errors import InvalidArgumentError


@pytest.mark.parametrize("lo, hi, limit", [(0, 100, 37), (1, 1, 1), (1, 50, 50), (3, 9, 2),
                                           (0, 1, 0)])
def test_integer_search_finds_the_last_fitting_value(lo, hi, limit) -> None:
    calls = []

    def fits(x: int) -> bool:
        calls.append(x)
        return x <= limit

    found = last_fitting(fits, lo, hi)
    assert found == max(lo, min(hi, limit))  # lo is taken to fit, as documented
    assert lo not in calls or lo == hi  # ... and never tested
    assert len(calls) <= math.ceil(math.log2(max(hi - lo, 1))) + 2


def test_float_search_converges_from_below_and_stops_at_hi() -> None:
    found = last_fitting(lambda f: f * f <= 0.5, 0.0, 1.0, iters=40)
    assert found <= math.sqrt(0.5) and found == pytest.approx(math.sqrt(0.5), abs=1e-11)
    assert last_fitting(lambda f: True, 0.0, 2.5, iters=30) == 2.5  # hi fits: no search
    assert last_fitting(lambda f: False, 0.25, 2.5, iters=30) == pytest.approx(0.25)


@pytest.mark.parametrize("value", [np.int64(4), 4, np.int8(4)])
def test_integers_accept_numpy_scalars(value) -> None:
    assert check_int(value, "steps", minimum=1) == 4 and type(check_int(value, "x")) is int


@pytest.mark.parametrize("value", [True, 2.0, "3", -1, None])
def test_integers_refuse_the_rest_naming_the_argument(value) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^steps must be an integer >= 0.*got"):
        check_int(value, "steps")
    assert check_int(None, "steps", optional=True) is None


def test_numbers_intervals_and_names() -> None:
    assert check_number(np.float32(0.5), "ratio", low=0.0, high=1.0) == 0.5
    assert check_number(1, "ratio", low=0.0, high=1.0) == 1.0
    for bad in (0.0, 1.5, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InvalidArgumentError, match=r"ratio must be a finite number in "
                                                       r"\(0, 1\]"):
            check_number(bad, "ratio", low=0.0, high=1.0)
    with pytest.raises(InvalidArgumentError, match=r"lr must be a finite number > 0 .*got 0"):
        check_number(0, "lr", low=0.0, meaning="a learning rate")


def test_choices_and_sizes() -> None:
    assert check_choice("a", ("a", "b"), "mode") == "a"
    with pytest.raises(InvalidArgumentError, match="mode='c' is not supported; choose one of a, b"):
        check_choice("c", ("a", "b"), "mode")
    assert check_size(None, "max_nodes", 7, "nodes") == 7
    assert check_size(np.int64(9), "max_nodes", 7, "nodes") == 9
    with pytest.raises(InvalidArgumentError, match="max_nodes=6 is too small .* 7 nodes"):
        check_size(6, "max_nodes", 7, "nodes")
    with pytest.raises(InvalidArgumentError, match="max_nodes=7.5 is not an integer"):
        check_size(7.5, "max_nodes", 7, "nodes")
