"""A small CNN for the 8x8 one-channel sklearn digits: the embedded, download-free task.

It is deliberately tiny (three conv+BN+ReLU layers, about 25k parameters) so that it
trains to >95 % test accuracy in seconds on a CPU, yet still has the structure pruning
cares about: several prunable conv groups, BatchNorm, pooling and a classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError

__all__ = ["DigitsCNN", "digits_cnn"]


class DigitsCNN(nn.Module):
    """Conv(16)-Conv(32)-MaxPool-Conv(64)-GlobalAvgPool-Linear for 8x8 inputs.

    Args:
        num_classes: Size of the output layer.
        in_channels: Input channels (1 for digits).
        widths: Output channels of the three conv layers.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if len(widths) != 3 or any(int(w) < 1 for w in widths):
            raise InvalidArgumentError(
                f"widths={widths!r} must be three positive channel counts, e.g. (16, 32, 64)"
            )
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes={num_classes} must be >= 1")
        w1, w2, w3 = (int(w) for w in widths)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w1, 3, padding=1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 3, padding=1, bias=False),
            nn.BatchNorm2d(w2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, padding=1, bias=False),
            nn.BatchNorm2d(w3),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def digits_cnn(num_classes: int = 10, **kw) -> DigitsCNN:
    """The small CNN used by the ``digits-cnn-v1`` task."""
    return DigitsCNN(num_classes, **kw)
