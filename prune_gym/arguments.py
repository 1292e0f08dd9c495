"""One set of argument checks, so every entry point accepts and rejects the same values.

The environments, the observation encoder, the evaluator and the baselines all take counts,
names and fractions from the user. Each check here raises an
:class:`~prune_gym.errors.InvalidArgumentError` that names the argument as the *caller*
typed it (``argument=``), so an environment checks ``eval_samples`` under that name before
it hands the value on to :class:`~prune_gym.evaluate.Evaluator` as ``max_samples``. Numpy
scalars (``np.int64(8)``, ``np.float32(0.5)``) are accepted wherever Python numbers are:
they are what arrays and vector envs hand around. ``bool`` is refused where a number is
wanted, because ``True`` passing as 1 hides a mistaken argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from prune_gym.errors import InvalidArgumentError

_INTEGERS = (int, np.integer)
_NUMBERS = (int, float, np.integer, np.floating)


def _is_int(value) -> bool:
    return isinstance(value, _INTEGERS) and not isinstance(value, (bool, np.bool_))


def check_int(value, argument: str, *, minimum: int = 0, optional: bool = False,
              meaning: str = "") -> int | None:
    """``value`` as an ``int`` >= ``minimum`` (``None`` passes when ``optional``).

    Args:
        value: what the user passed.
        argument: the argument's name as the user typed it.
        minimum: the smallest allowed value.
        optional: whether ``None`` (meaning "the default") is allowed.
        meaning: what the number is, for the message (e.g. "batches of training data").
    """
    if value is None and optional:
        return None
    if not _is_int(value) or value < minimum:
        what = f" ({meaning})" if meaning else ""
        none = " or None" if optional else ""
        raise InvalidArgumentError(f"{argument} must be an integer >= {minimum}{none}{what}; "
                                   f"got {value!r}")
    return int(value)


def check_size(value, argument: str, least: int, what: str) -> int:
    """A padding size: an integer >= ``least`` (what the network needs), or ``None`` for
    exactly ``least``.

    Args:
        value: what the user passed.
        argument: its name, e.g. ``"max_nodes"``.
        least: the network's own size.
        what: the message's description of ``least``, e.g. ``"nodes"``.
    """
    if value is None:
        return least
    problem = "is not an integer" if not _is_int(value) else \
        "is too small for this network" if value < least else ""
    if problem:
        raise InvalidArgumentError(
            f"{argument}={value!r} {problem}: the network has {least} {what}; "
            f"pass an integer >= {least} (or None for exactly {least})")
    return int(value)


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isfinite(low) and math.isfinite(high):
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if math.isfinite(low):
        return f" {'>' if low_open else '>='} {low:g}"
    if math.isfinite(high):
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(value, argument: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = True, high_open: bool = False, meaning: str = "") -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high``.

    Args:
        value: what the user passed.
        argument: the argument's name as the user typed it.
        low, high: the interval's ends.
        low_open, high_open: whether the ends themselves are excluded (default ``(low,
            high]``).
        meaning: what the number is, for the message.
    """
    given = value
    ok = isinstance(value, _NUMBERS) and not isinstance(value, (bool, np.bool_)) \
        and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (value > low if low_open else value >= low) and \
            (value < high if high_open else value <= high)
    if not ok:
        what = f" ({meaning})" if meaning else ""
        raise InvalidArgumentError(f"{argument} must be a finite number"
                                   f"{_interval(low, high, low_open, high_open)}{what}; "
                                   f"got {given!r}")
    return value


def check_choice(value, allowed: Sequence[str], argument: str) -> str:
    """``value`` if it is one of ``allowed``, else an error listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise InvalidArgumentError(f"{argument}={value!r} is not supported; choose one of "
                                   f"{', '.join(allowed)}")
    return value


def check_callable(value, argument: str, signature: str) -> Callable | None:
    """``value`` if it is ``None`` or callable, else an error showing ``signature``."""
    if value is not None and not callable(value):
        raise InvalidArgumentError(f"{argument} must be a callable {signature}; got "
                                   f"{value!r} ({type(value).__name__})")
    return value
