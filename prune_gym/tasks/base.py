"""The :class:`Task` bundle (it builds the network and evaluator every method scores with) and
what every task factory shares (accuracy, atomic cache writes)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_gym.data import DataSplits
from prune_gym.evaluate import DEFAULT_BN_BATCHES, Evaluator
from prune_gym.files import atomic_path
from prune_gym.network import PrunableNetwork

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
    _networks: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def network(self, importance: str = "l1", *, calibration_samples: int | None = None,
                seed: int = 0) -> PrunableNetwork:
        """The task's model analysed, as every method, environment and replay prunes it.

        Built once per setting and then shared by whoever asks this task (a search, then
        the command line's rebuild of its result): analysis is the expensive part, and the
        network's masked working copy is put back after every use.

        Args:
            importance: the channel criterion (``"taylor"`` needs ``calibration_samples``).
            calibration_samples: first training images for the Taylor criterion.
            seed: the network's seed (the ``"random"`` criterion).
        """
        key = (importance, calibration_samples, seed)
        if key not in self._networks:
            calibration = None
            if calibration_samples:
                x, y = self.data.train.as_tuple()
                calibration = (x[:calibration_samples], y[:calibration_samples])
            self._networks[key] = PrunableNetwork(self.model, self.example_inputs,
                                                  importance=importance,
                                                  calibration=calibration, seed=seed)
        return self._networks[key]

    def evaluator(self, val_samples: int | None = None, *,
                  bn_recalibration: int = DEFAULT_BN_BATCHES, **options: Any) -> Evaluator:
        """How every state of this task is scored: its validation split (the first
        ``val_samples``), BatchNorm recalibrated on training batches, exactly as an episode
        end (``options``: :class:`~prune_gym.evaluate.Evaluator`'s others)."""
        return Evaluator(self.val_data, max_samples=val_samples,
                         train_data=self.data.train.as_tuple(),
                         bn_recalibration=bn_recalibration, **options)

    def test_evaluator(self, test_samples: int | None = None) -> Evaluator:
        """The test split's evaluator (reported, never used for selection)."""
        return Evaluator(self.data.test.as_tuple(), max_samples=test_samples)

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
        with atomic_path(path) as tmp:
            torch.save(blob, tmp)
    except OSError as exc:  # read-only home etc.: the task still works, just uncached
        warnings.warn(f"could not cache trained weights in {str(path.parent)!r} ({exc}); "
                      "set PRUNE_GYM_CACHE or pass cache_dir= to a writable folder",
                      stacklevel=4)
