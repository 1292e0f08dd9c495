"""Turn an environment's constructor arguments into the engine objects it runs on.

Every environment accepts the same ``model=`` forms (a module, a zero-argument factory, a
task name, or an analysed :class:`~prune_gym.network.PrunableNetwork`) and the same data
and evaluation options. Resolving them in one place keeps the three environments' rules
identical and their error messages the same.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prune_gym.cost import check_budget
from prune_gym.errors import DataError, InvalidArgumentError, TaskError
from prune_gym.evaluate import Evaluator, as_tensors
from prune_gym.network import PrunableNetwork

DEFAULT_TASK = "digits-cnn-v1"
DEFAULT_BUDGET = 0.5
# BatchNorm recalibration when training data is at hand (bn_recalibration=None): without
# it, pruned states keep the unpruned statistics, score near chance and PPO learns states
# worse than random ones; with 4 batches of 64 it beats them
# (benchmarks/results/reward_signal.md).
DEFAULT_BN_BATCHES = 4


@dataclass
class Problem:
    """What an environment prunes, how it evaluates, and the budget it prunes to."""

    net: PrunableNetwork
    evaluator: Evaluator
    budget: float
    train: tuple[torch.Tensor, torch.Tensor] | None
    task: str | None


def _pair(split) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(x, y)`` from a Split-like object (``.as_tuple()`` or ``.x``/``.y``) or a pair."""
    if split is None:
        return None
    if hasattr(split, "as_tuple"):
        return split.as_tuple()
    if hasattr(split, "x") and hasattr(split, "y"):
        return split.x, split.y
    return split


def _load_task(name: str):
    from prune_gym import tasks  # imported late: tasks pull in data loaders and models

    known = list(tasks.list_tasks())
    if name not in known:
        raise TaskError(f"model={name!r} is not a known task; known tasks: {', '.join(known)}")
    return tasks.make_task(name)


def _task_part(task, name: str):
    """A split or attribute of a task, wherever the task keeps it (itself or ``.data``)."""
    for holder in (task, getattr(task, "data", None)):
        if holder is not None and hasattr(holder, name):
            return getattr(holder, name)
    return None


def _resolve_model(model) -> tuple[nn.Module | PrunableNetwork, object | None, str | None]:
    """The module (or analysed network) to prune, and the task that brought it, if any."""
    if isinstance(model, str):
        task = _load_task(model)
        return task.model, task, model
    if isinstance(model, (nn.Module, PrunableNetwork)):
        return model, None, None
    if callable(model):
        try:
            built = model()
        except Exception as exc:  # noqa: BLE001 - the user's factory, any failure
            raise InvalidArgumentError(f"model factory raised {type(exc).__name__}: {exc}; "
                                       "model= takes a zero-argument callable") from exc
        if not isinstance(built, nn.Module):
            raise InvalidArgumentError(f"model factory returned {type(built).__name__}; it must "
                                       "return a torch.nn.Module")
        return built, None, None
    raise InvalidArgumentError(
        f"model must be an nn.Module, a zero-argument factory returning one, a task name "
        f"(e.g. {DEFAULT_TASK!r}) or a PrunableNetwork; got {type(model).__name__}")


def build_problem(model, *, val_data, example_inputs, budget, importance: str,
                  train_data, eval_samples: int | None, eval_batch_size: int,
                  bn_recalibration: int | None, evaluate: Callable | None, eval_cache: int,
                  calibration_batch: int, seed: int) -> Problem:
    """Resolve the constructor arguments shared by all environments into a :class:`Problem`.

    Validation data is checked against the model (shapes, labels, finite outputs) before
    analysis, so a mismatch is reported as a data problem, not as a tracing failure.
    """
    source, task, task_name = _resolve_model(model)
    if val_data is None and task is not None:
        val_data = _pair(_task_part(task, "val"))
    if train_data is None and task is not None:
        train_data = _pair(_task_part(task, "train"))
    if budget is None:
        budget = getattr(task, "budget", None) or DEFAULT_BUDGET
    budget = check_budget(budget)
    if val_data is None and evaluate is None:
        raise DataError("val_data is required: pass (x, y) tensors or a DataLoader of the "
                        "validation split (held out of training), or give model= a task name")
    train = as_tensors(train_data, "train_data") if train_data is not None else None
    if bn_recalibration is None:
        bn_recalibration = DEFAULT_BN_BATCHES if train is not None and evaluate is None else 0
    if bn_recalibration and train is None:
        raise InvalidArgumentError("bn_recalibration > 0 needs train_data (training batches to "
                                   "re-estimate BatchNorm statistics on)")
    evaluator = Evaluator(val_data, max_samples=eval_samples, batch_size=eval_batch_size,
                          train_data=train, bn_recalibration=bn_recalibration, fn=evaluate,
                          cache_size=eval_cache)
    if example_inputs is None:
        example_inputs = _task_part(task, "example_inputs") if task is not None else None
    if example_inputs is None:
        if evaluator.x is None:
            raise InvalidArgumentError("example_inputs is required when there is no val_data "
                                       "to take it from, e.g. torch.randn(1, 3, 32, 32)")
        example_inputs = evaluator.x[:1].clone()
    calibration = None
    if importance == "taylor":
        if train is None:
            raise InvalidArgumentError("importance='taylor' needs train_data (a calibration "
                                       "batch of the training split)")
        calibration = (train[0][:calibration_batch], train[1][:calibration_batch])
    if isinstance(source, PrunableNetwork):
        net = copy.deepcopy(source)  # a private copy: masking must not race other users
        evaluator.check_model(net.model)
    else:
        evaluator.check_model(source)  # a forward only; the model's mode is put back
        net = PrunableNetwork(source, example_inputs, importance=importance,
                              calibration=calibration, seed=seed)
    return Problem(net, evaluator, budget, train, task_name)
