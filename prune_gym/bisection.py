"""One bisection for every "largest setting that still fits the budget" search.

The environments' projections (LayerRatio's action wall, ChannelMask's cut, DNNGraph's
common shrink factor) and the baselines (uniform scaling, the global magnitude threshold)
all look for the largest value whose keep state fits a budget, where fitting holds up to
some point and fails beyond it (the metric grows with the channels kept). Python's
``bisect`` module searches sorted sequences, not predicates over integers or floats, so
this small helper is written here once; it lives in the core so that ``agents`` can use it
too (the core never imports ``agents``).
"""

from __future__ import annotations

from collections.abc import Callable


def last_fitting(fits: Callable, lo, hi, *, iters: int | None = None):
    """The largest ``x`` in ``[lo, hi]`` with ``fits(x)``, for ``fits`` monotone
    (true up to some point, false beyond it).

    ``lo`` is taken to fit and is never tested: callers choose it as the state that is
    reachable by construction, and check it themselves where it might not be. ``hi`` is
    tested first, so a value that already fits costs one call; ``hi <= lo`` gives ``lo``.

    Args:
        fits: the monotone predicate.
        lo: a value assumed to fit.
        hi: the largest value worth having.
        iters: ``None`` for an exact search over the integers; otherwise a search over the
            reals that halves the interval ``iters`` times and returns its fitting end.

    Returns:
        An ``int`` (``iters=None``) or a ``float`` such that ``fits`` holds for it (or it
        is ``lo``).
    """
    if hi <= lo:
        return lo
    if fits(hi):
        return hi
    if iters is None:
        lo, hi = int(lo), int(hi) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo
    lo, hi = float(lo), float(hi)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
