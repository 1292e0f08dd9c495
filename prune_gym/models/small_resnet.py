"""A small residual network for the 8x8 sklearn digits: the second embedded task.

``digits-cnn-v1`` has only a few prunable groups, too few to test what matters for
graph policies (transfer between networks, coupled channels). This network keeps the
digits task's virtues (trains in seconds on one CPU thread, no download) and adds the
structure of real ResNets: BasicBlocks with BatchNorm, residual additions, and 1x1
convolution (option-B) projection shortcuts where the width or resolution changes.

Unlike the option-A (zero-padding) shortcuts of the CIFAR ResNets, a projection starts
a new residual stream, so each stage's stream is an ordinary coupled channel group that
the pruning engine can verify and prune: three stages of three blocks give nine
block-internal groups plus three residual-stream groups.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError

__all__ = ["DigitsResNet", "ProjectionBlock", "digits_resnet"]


class ProjectionBlock(nn.Module):
    """Two 3x3 conv+BN layers plus a residual add; a 1x1 conv+BN shortcut when shapes change.

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (and of the projection).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place, so that autograd-based tracers see a plain add.
        return self.relu2(out + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem conv, then stages of :class:`ProjectionBlock`, global average pool, linear.

    The default (widths 16/32/64, three blocks per stage, strides 1/2/2 on 8x8 inputs)
    has about 0.27M parameters and 2.5M MACs per image.

    Args:
        num_classes: Size of the output layer.
        in_channels: Input channels (1 for digits).
        widths: Output channels of each stage.
        blocks: Blocks per stage (one int for all stages, or one per stage).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: int | tuple[int, ...] = 3,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if not widths or any(int(w) != w or w < 1 for w in widths):
            raise InvalidArgumentError(
                f"widths={widths!r} must be positive channel counts, one per stage, "
                "e.g. (16, 32, 64)")
        per_stage = (blocks,) * len(widths) if isinstance(blocks, int) else tuple(blocks)
        if len(per_stage) != len(widths) or any(int(b) != b or b < 1 for b in per_stage):
            raise InvalidArgumentError(
                f"blocks={blocks!r} must be a positive int or {len(widths)} positive ints "
                "(one per entry of widths)")
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes={num_classes} must be >= 1")
        if in_channels < 1:
            raise InvalidArgumentError(f"in_channels={in_channels} must be >= 1")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages = []
        in_planes = widths[0]
        for i, (width, n) in enumerate(zip(widths, per_stage, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                layers.append(ProjectionBlock(in_planes, width, stride if j == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # He init; BN starts as identity
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.classifier(torch.flatten(self.avgpool(out), 1))


def digits_resnet(num_classes: int = 10, **kw) -> DigitsResNet:
    """The small residual network used by the ``digits-resnet-v1`` task."""
    return DigitsResNet(num_classes, **kw)
