"""Run independent jobs (a benchmark's task x budget x method x seed cells) as Ray tasks.

A benchmark grid is many cells that share nothing, each best run on one core with one
torch thread (more threads per cell buy less than more cells at once: see
:mod:`prune_gym.parallel`). Ray runs them on every core of one machine, or of every machine
in a Ray cluster, with no change to the cell's code: :func:`run_cells_on_ray` takes the
cells (any picklable values) and a function of one cell, and gives back the results in
the cells' order, handing each to ``on_result`` as it arrives so that a caller can save it
at once (an interrupted grid keeps its finished cells).

Ray is optional: ``pip install "prune-gym[ray]"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prune_gym.arguments import check_callable, check_int
from prune_gym.errors import InvalidArgumentError
from prune_gym.rllib import require_ray

__all__ = ["run_cells_on_ray"]


def _run_cell(fn: Callable[[Any], Any], cell: Any, threads: int) -> Any:
    """One cell in a Ray worker, with ``threads`` torch threads (workers are reused across
    cells, so the count is set for every cell, not once)."""
    import torch

    torch.set_num_threads(threads)
    return fn(cell)


def _check_picklable(value, argument: str, cloudpickle) -> None:
    try:
        cloudpickle.dumps(value)
    except Exception as exc:  # what pickling raises depends on the object (TypeError...)
        raise InvalidArgumentError(
            f"{argument} cannot be sent to a Ray worker ({type(exc).__name__}: {exc}); pass "
            "picklable values: plain data for cells, a module-level function (or a "
            "functools.partial of one) for fn") from exc


def run_cells_on_ray(cells: Sequence, fn: Callable[[Any], Any], *, threads: int = 1,
                     num_cpus: int | None = None, address: str | None = None,
                     on_result: Callable[[int, Any], None] | None = None) -> list:
    """``[fn(cell) for cell in cells]``, each call a Ray task on ``threads`` CPUs.

    If Ray is not initialized in this process, a cluster is started for the call (a local
    one of ``num_cpus`` CPUs, default all; or the one at ``address``, e.g. ``"auto"``) and
    shut down after it; otherwise the running one is used. The first cell that raises
    cancels the cells not finished yet and its exception is raised (an instance of the
    cell's own exception class).

    Args:
        cells: the cells, each a picklable value (a tuple of names and numbers, say).
        fn: called as ``fn(cell)`` in a worker; a module-level function or a
            ``functools.partial`` of one (shared arguments go in the partial). It should
            seed what it draws from the cell: cells run in any order, in any process.
        threads: CPUs each cell reserves, and torch threads it runs with.
        num_cpus: CPUs of the local cluster to start (only when Ray is not running and no
            ``address`` is given).
        address: the cluster to connect to (only when Ray is not running).
        on_result: called in this process as ``on_result(index, result)`` as each cell
            finishes (in the order they finish).

    Returns:
        The results, in the order of ``cells``.

    Raises:
        MissingRayError: Ray is not installed (an ``InvalidArgumentError`` and an
            ``ImportError``).
    """
    ray = require_ray("run_cells_on_ray")
    cloudpickle = require_ray("run_cells_on_ray", "ray.cloudpickle")
    if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence):
        raise InvalidArgumentError(f"cells must be a list or tuple of cells; got "
                                   f"{type(cells).__name__}")
    if fn is None:
        raise InvalidArgumentError("fn must be a callable fn(cell); got None")
    check_callable(fn, "fn", "fn(cell)")
    check_callable(on_result, "on_result", "on_result(index, result)")
    threads = check_int(threads, "threads", minimum=1, meaning="CPUs and torch threads per cell")
    num_cpus = check_int(num_cpus, "num_cpus", minimum=1, optional=True)
    if address is not None and not isinstance(address, str):
        raise InvalidArgumentError(f"address must be a Ray cluster address such as 'auto' or "
                                   f"'ray://host:10001', or None; got {address!r}")
    if address is not None and num_cpus is not None:
        raise InvalidArgumentError("num_cpus sizes a local cluster and address connects to an "
                                   "existing one; give one of them")
    if ray.is_initialized() and (num_cpus is not None or address is not None):
        raise InvalidArgumentError(
            f"{'num_cpus' if num_cpus is not None else 'address'} only applies when this call "
            "starts Ray, and Ray is already initialized in this process; leave it None to use "
            "that cluster, or call ray.shutdown() first")
    _check_picklable(fn, "fn", cloudpickle)
    for i, cell in enumerate(cells):
        _check_picklable(cell, f"cells[{i}]", cloudpickle)
    if not cells:
        return []
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False)
    try:
        return _run(ray, list(cells), fn, threads, on_result)
    finally:
        if started:
            ray.shutdown()


def _run(ray, cells: list, fn, threads: int, on_result) -> list:
    cpus = ray.cluster_resources().get("CPU", 0)
    if threads > cpus:  # Ray would wait for such a worker forever
        raise InvalidArgumentError(f"threads={threads} CPUs per cell is more than the Ray "
                                   f"cluster has ({cpus:g}); use threads <= {cpus:g}")
    task = ray.remote(num_cpus=threads)(_run_cell)
    fn_ref = ray.put(fn)  # sent once, not once per cell
    refs = [task.remote(fn_ref, cell, threads) for cell in cells]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                i = index[ref]
                results[i] = ray.get(ref)
                if on_result is not None:
                    on_result(i, results[i])
    except BaseException:
        for ref in pending:  # a failed cell, an on_result error or Ctrl-C: stop the rest
            ray.cancel(ref)
        raise
    return results
