"""The :class:`Task` bundle and what every task factory shares (accuracy, atomic writes)."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_gym.data import DataSplits

__all__ = ["Task", "accuracy", "save_atomic"]


@dataclass
class Task:
    """Everything an environment needs: a trained model, data and a budget.

    Attributes:
        name: Versioned task name, e.g. ``"digits-cnn-v0"``.
        model: The trained model, in eval mode (a template: environments copy it).
        data: Train / validation / test splits (validation never overlaps test).
        example_inputs: One input of batch size 1, for tracing the model.
        budget: Default fraction of the original MACs to keep.
        num_classes: Number of classes.
        description: One line on what the task is.
        metadata: Provenance: weight and data paths, accuracies, cache files.
    """

    name: str
    model: nn.Module
    data: DataSplits
    example_inputs: torch.Tensor
    budget: float
    num_classes: int
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def val_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the validation split, as environments take it."""
        return self.data.val.as_tuple()

    @property
    def version(self) -> int:
        """The N of the ``-vN`` suffix."""
        return int(self.name.rsplit("-v", 1)[1])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``(x, y)``, in batches."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


def save_atomic(blob: dict, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written cache file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:  # read-only home etc.: the task still works, just uncached
        warnings.warn(f"could not cache trained weights in {str(path.parent)!r} ({exc}); "
                      "set PRUNE_GYM_CACHE or pass cache_dir= to a writable folder",
                      stacklevel=4)
        return
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
