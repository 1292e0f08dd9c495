"""Torch threads in worker processes: vector environments that never hang and use every core.

Importing :mod:`prune_gym` installs two rules, so that vector environments work with the
settings a user types (``gym.make_vec(..., vectorization_mode="async")``, SB3's
``SubprocVecEnv``):

* A process forked from one that has run torch starts with **one** torch thread. Torch's
  OpenMP thread pool does not survive ``fork``: a forked child that asks it for more than
  one thread waits forever for threads that do not exist (this is why Gymnasium's
  ``AsyncVectorEnv``, which forks on Linux, used to hang). PyTorch's own DataLoader
  workers set one thread for the same reason.
* A multiprocessing worker started by ``spawn`` or ``forkserver`` (SB3's default) that
  imports prune_gym also uses one torch thread: every worker starting as many threads as
  there are cores makes them fight over the cores, and one thread per worker is what
  lets N workers on N cores run N times as fast as one.

A single environment in the main process keeps torch's default (every core). The count
can be changed with the environment variable ``PRUNE_GYM_WORKER_THREADS`` (in a forked
child, more than one thread is only safe if the parent never ran torch in parallel).

A vector environment may not start more workers than the machine can hold: at most
``WORKERS_PER_CORE`` per usable core (``PRUNE_GYM_MAX_WORKERS`` overrides the limit).
Beyond that the workers, one torch thread each, only take turns on the cores while each
holds its own copy of torch, the network and the validation data (about 0.4 GiB for the
digits task, see ``benchmarks/results/envs.md``); the request is refused with an
:class:`~prune_gym.errors.InvalidArgumentError` before any worker starts.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import torch

from prune_gym.errors import InvalidArgumentError

WORKER_THREADS_VAR = "PRUNE_GYM_WORKER_THREADS"
MAX_WORKERS_VAR = "PRUNE_GYM_MAX_WORKERS"
WORKERS_PER_CORE = 4


def _positive_int_from_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidArgumentError(f"environment variable {name}={raw!r} must be a positive "
                                   f"integer; unset it to use the default ({default})")
    return value


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_threads() -> int:
    """Torch threads a worker process uses (1 unless ``PRUNE_GYM_WORKER_THREADS`` says)."""
    return _positive_int_from_env(WORKER_THREADS_VAR, 1)


def max_workers() -> int:
    """The most worker processes one vector environment may start on this machine."""
    return _positive_int_from_env(MAX_WORKERS_VAR, WORKERS_PER_CORE * usable_cores())


def check_worker_count(workers: int, argument: str = "num_envs") -> None:
    """Raise InvalidArgumentError if ``workers`` processes are more than the machine holds."""
    limit = max_workers()
    if workers > limit:
        raise InvalidArgumentError(
            f"{argument}={workers} worker processes is more than this machine can hold: at "
            f"most {limit} ({WORKERS_PER_CORE} per usable core, {usable_cores()} cores; each "
            f"worker runs one torch thread and holds its own copy of the network and data). "
            f"Use {argument} <= {limit}, vectorization_mode='sync' (no processes), or set "
            f"{MAX_WORKERS_VAR} to raise the limit")


def vector_env_workers() -> int | None:
    """Worker count of a Gymnasium ``AsyncVectorEnv`` under construction up the call stack.

    ``AsyncVectorEnv`` builds one environment in the parent process before it starts any
    worker (to read the spaces); that environment finds the vector env's ``env_fns`` in
    its caller's frame. Gymnasium offers no hook that sees the worker count before the
    workers start, hence the frame walk; if Gymnasium changes, this returns None and no
    check is made.
    """
    try:
        from gymnasium.vector import AsyncVectorEnv
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "__init__":
            owner = frame.f_locals.get("self")
            if isinstance(owner, AsyncVectorEnv):
                env_fns = frame.f_locals.get("env_fns")
                return len(env_fns) if env_fns is not None else None
        frame = frame.f_back
    return None


def check_vector_env() -> None:
    """Refuse, before any worker starts, an ``AsyncVectorEnv`` with too many workers."""
    workers = vector_env_workers()
    if workers is not None:
        check_worker_count(workers)


def in_worker_process() -> bool:
    """True in a process started by :mod:`multiprocessing` (any start method).

    ``parent_process()`` is only set once the child starts running its target; a spawn or
    forkserver child imports the parent's main module (and so prune_gym) before that,
    while its name is already the child's own (``SpawnProcess-1``, ``ForkServerProcess-1``).
    """
    return (multiprocessing.parent_process() is not None
            or multiprocessing.current_process().name != "MainProcess")


def _after_fork_in_child() -> None:
    try:
        threads = worker_threads()
    except InvalidArgumentError:  # raised again, visibly, where the variable is read next
        threads = 1
    torch.set_num_threads(threads)


_installed = False


def install() -> None:
    """Apply the worker-thread rules (idempotent; :mod:`prune_gym` calls it on import)."""
    global _installed
    if _installed:
        return
    _installed = True
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    if in_worker_process():
        torch.set_num_threads(worker_threads())


install()
