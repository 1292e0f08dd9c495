"""VGG with BatchNorm for 32x32 inputs (the CIFAR variant used in pruning papers).

Five max-pools take 32x32 down to 1x1, so the classifier sees a 512-vector; by default it
is a single Linear layer, as in most CIFAR pruning work (Li et al. 2017, Liu et al. 2017).
"""

from __future__ import annotations

import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError
from prune_gym.models.init import init_weights

__all__ = ["VGG", "VGG_CONFIGS", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]

# "M" is a 2x2 max-pool; numbers are output channels of a 3x3 conv + BN + ReLU.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG-BN for CIFAR.

    Args:
        depth: 11, 13, 16 or 19.
        num_classes: Size of the output layer.
        in_channels: Input image channels.
        hidden: If given, the classifier is Linear(512, hidden)-ReLU-Linear(hidden, C)
            instead of a single Linear(512, C).
    """

    def __init__(
        self,
        depth: int = 16,
        num_classes: int = 10,
        in_channels: int = 3,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        if depth not in VGG_CONFIGS:
            raise InvalidArgumentError(
                f"depth={depth} is not a known VGG depth (use one of {sorted(VGG_CONFIGS)})"
            )
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes={num_classes} must be >= 1")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(channels, int(item), 3, padding=1, bias=False),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(item)
        self.depth = depth
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 1x1 already for 32x32; makes other sizes work
        if hidden is None:
            self.classifier: nn.Module = nn.Linear(channels, num_classes)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
            )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def vgg11_bn(num_classes: int = 10, **kw) -> VGG:
    """VGG-11 with BatchNorm."""
    return VGG(11, num_classes, **kw)


def vgg13_bn(num_classes: int = 10, **kw) -> VGG:
    """VGG-13 with BatchNorm."""
    return VGG(13, num_classes, **kw)


def vgg16_bn(num_classes: int = 10, **kw) -> VGG:
    """VGG-16 with BatchNorm (about 14.7M parameters for CIFAR)."""
    return VGG(16, num_classes, **kw)


def vgg19_bn(num_classes: int = 10, **kw) -> VGG:
    """VGG-19 with BatchNorm (about 20M parameters for CIFAR)."""
    return VGG(19, num_classes, **kw)
