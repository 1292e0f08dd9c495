"""Task names: register, list and build tasks by name (a name is a promise, see the package)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prune_gym.errors import InvalidArgumentError, TaskError
from prune_gym.tasks.base import Task

__all__ = ["as_task", "describe_task", "list_tasks", "make_task", "register_task"]


@dataclass(frozen=True)
class _Spec:
    factory: Callable[..., Task]
    description: str


_TASKS: dict[str, _Spec] = {}


def register_task(name: str, factory: Callable[..., Task], description: str) -> None:
    """Add a task; ``factory(**overrides)`` must return a :class:`Task` named ``name``."""
    head, sep, version = name.rpartition("-v")
    if not head or not sep or not version.isdigit():
        raise InvalidArgumentError(f"name={name!r} must end in a version suffix like '-v0'")
    if name in _TASKS:
        raise InvalidArgumentError(f"name={name!r} is already registered; bump its version")
    _TASKS[name] = _Spec(factory, description)


def describe_task(name: str) -> str:
    """The one-line description ``name`` was registered with."""
    if name not in _TASKS:
        raise TaskError(f"name={name!r} is not a known task; known tasks: "
                        f"{', '.join(list_tasks())}")
    return _TASKS[name].description


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task`."""
    return sorted(_TASKS)


def make_task(name: str, **overrides: Any) -> Task:
    """Build a task by name.

    Args:
        name: One of :func:`list_tasks`.
        **overrides: Task options, e.g. ``budget=0.3``, ``seed=1``, ``cache_dir=...``,
            or for the CIFAR tasks ``data_dir=``, ``weights=``, ``archive=``, ``max_train=``,
            ``val_from=`` and (``-v1``) ``download=True``.

    Raises:
        TaskError: Unknown name or option, or what the task needs is missing.
    """
    if name not in _TASKS:
        raise TaskError(
            f"name={name!r} is not a known task; known tasks: {', '.join(list_tasks())}"
        )
    factory = _TASKS[name].factory
    accepted = [p for p in inspect.signature(factory).parameters if p != "name"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TaskError(f"make_task({name!r}) got unknown option(s) {unknown}; "
                        f"accepted options: {accepted}")
    return factory(**overrides)


def as_task(task, argument: str = "task") -> Task:
    """``task`` if it is a :class:`Task`, else the task it names (built with its defaults).

    Raises:
        TaskError: an unknown name, or neither a name nor a task.
    """
    if isinstance(task, Task):
        return task
    if not isinstance(task, str):
        raise TaskError(f"{argument} must be a task name or a prune_gym.tasks.Task; got "
                        f"{type(task).__name__}")
    if task not in _TASKS:
        raise TaskError(f"{argument}={task!r} is not a known task; known tasks: "
                        f"{', '.join(list_tasks())}")
    return make_task(task)
