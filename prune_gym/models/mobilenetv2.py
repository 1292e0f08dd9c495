"""MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs.

On CIFAR the ImageNet stem would shrink the image to 1x1 long before the last stage, so
the stem and the second stage use stride 1 (total down-sampling 8x, ending at 4x4), the
usual CIFAR adaptation. Depthwise convolutions and inverted residuals are kept, because
they are exactly what makes channel pruning of this network interesting.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError
from prune_gym.models.init import init_weights

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenetv2"]

# (expansion t, output channels c, repeats n, first stride s); strides adapted for CIFAR.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers.append(_conv_bn(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn(hidden, cout, 1, act=False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs.

    Args:
        num_classes: Size of the output layer.
        width_mult: Channel multiplier applied to every layer (1.0 = the paper's width).
        in_channels: Input image channels.
        dropout: Dropout before the classifier (0 disables it).
    """

    def __init__(
        self,
        num_classes: int = 10,
        width_mult: float = 1.0,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise InvalidArgumentError(f"width_mult={width_mult} must be > 0 (e.g. 1.0 or 0.5)")
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes={num_classes} must be >= 1")
        channels = _divisible(32 * width_mult)
        last = _divisible(1280 * max(1.0, width_mult))
        blocks: list[nn.Module] = [_conv_bn(in_channels, channels, 3, stride=1)]
        for t, c, n, s in CIFAR_SETTINGS:
            out = _divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        blocks.append(_conv_bn(channels, last, 1))
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


def mobilenetv2(num_classes: int = 10, **kw) -> MobileNetV2:
    """MobileNetV2 (about 2.2M parameters for 10 classes)."""
    return MobileNetV2(num_classes, **kw)
