"""Named, versioned pruning tasks: a trained model, its data and a default budget.

A task name is a promise: ``digits-cnn-v0`` always means the same architecture, training
recipe, data split and budget, so results from different machines and agents compare.
Anything that changes those bumps the version suffix, and the old version stays.

- ``digits-cnn-v1``, ``digits-resnet-v1`` (:mod:`prune_gym.tasks.digits`): embedded, need
  nothing but scikit-learn, and load trained weights shipped in the package: the same
  network on every machine. ``-v0`` trained them on first use (CPU-dependent weights).
- ``cifar10-resnet{20,56}-v2`` (:mod:`prune_gym.tasks.cifar`): reference checkpoints on
  the CIFAR-10 JPEG export, from local files, validated on a fixed half of the test split
  (images the checkpoints never saw) and tested on the other half. ``-v0`` held its
  validation out of train, which the checkpoints were trained on.
- ``cifar10-resnet{20,56}-v1``: the same checkpoints on the standard CIFAR-10
  (``cifar-10-python.tar.gz``), fetched with ``download=True``, validation from half of
  the test split.

Nothing is downloaded behind the user's back.
"""

from __future__ import annotations

from prune_gym.tasks.base import Task
from prune_gym.tasks.cifar import (
    CIFAR10_JPEG_ARCHIVE,
    DATA_ENV,
    cifar10_jpeg_task,
    cifar10_python_task,
)
from prune_gym.tasks.digits import (
    DIGITS_RECIPE,
    DIGITS_RESNET_RECIPE,
    digits_cnn_v0,
    digits_cnn_v1,
    digits_resnet_v0,
    digits_resnet_v1,
    train_digits,
    train_digits_cnn,
    train_digits_resnet,
)
from prune_gym.tasks.registry import _TASKS as _TASKS  # noqa: PLC0414 - read by the CLI
from prune_gym.tasks.registry import list_tasks, make_task, register_task

__all__ = [
    "CIFAR10_JPEG_ARCHIVE",
    "DATA_ENV",
    "DIGITS_RECIPE",
    "DIGITS_RESNET_RECIPE",
    "Task",
    "list_tasks",
    "make_task",
    "register_task",
    "train_digits",
    "train_digits_cnn",
    "train_digits_resnet",
]

register_task("digits-cnn-v1", digits_cnn_v1,
              "Small CNN on sklearn digits (embedded, shipped weights: the same everywhere).")
register_task("digits-resnet-v1", digits_resnet_v1,
              "Small residual net on sklearn digits, 12 prunable groups (embedded, shipped "
              "weights).")
register_task("digits-cnn-v0", digits_cnn_v0,
              "Small CNN on sklearn digits, trained on first use (weights depend on the CPU; "
              "use -v1).")
register_task("digits-resnet-v0", digits_resnet_v0,
              "Small residual net on sklearn digits, trained on first use (weights depend on "
              "the CPU; use -v1).")
for _depth in (20, 56):
    register_task(f"cifar10-resnet{_depth}-v2",
                  cifar10_jpeg_task(f"cifar10-resnet{_depth}-v2", _depth, val_from="test"),
                  f"ResNet-{_depth} on CIFAR-10 JPEG export (local files; val from half of "
                  "test, never seen; test = the other half).")
    register_task(f"cifar10-resnet{_depth}-v0",
                  cifar10_jpeg_task(f"cifar10-resnet{_depth}-v0", _depth),
                  f"ResNet-{_depth} on CIFAR-10 JPEG export (local files; val held out of "
                  "train, which the weights saw: use -v2).")
    register_task(f"cifar10-resnet{_depth}-v1",
                  cifar10_python_task(f"cifar10-resnet{_depth}-v1", _depth),
                  f"ResNet-{_depth} on standard CIFAR-10 (download=True fetches it; val from "
                  "half of test, never seen).")
del _depth
