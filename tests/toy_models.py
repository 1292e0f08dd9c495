"""Small architectures that exercise the dependency patterns a pruning engine must get right."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class ConcatNet(nn.Module):
    """Two branches concatenated along channels (Inception/DenseNet style), then a flatten."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.left = conv_bn(8, 6)
        self.right = conv_bn(8, 10)
        self.fuse = conv_bn(16, 12, stride=2)
        self.fc = nn.Linear(12 * 4 * 4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = F.adaptive_avg_pool2d(self.fuse(x), 4)
        return self.fc(torch.flatten(x, 1))


class SENet(nn.Module):
    """A squeeze-and-excitation block: channel gates computed from the channels themselves."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.body = conv_bn(16, 24)
        self.squeeze = nn.Linear(24, 6)
        self.excite = nn.Linear(6, 24)
        self.head = conv_bn(24, 32, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3))))))
        x = x * gate[:, :, None, None]
        return self.fc(self.head(x).mean((2, 3)))


class GroupedNet(nn.Module):
    """A ResNeXt-style grouped 3x3 convolution (groups=4) between 1x1 convolutions."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.reduce = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
                                    nn.ReLU())
        self.grouped = conv_bn(32, 32, groups=4)
        self.expand = nn.Sequential(nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24),
                                    nn.ReLU())
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.expand(self.grouped(self.reduce(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class FunctionalReuseNet(nn.Module):
    """Functional ops (F.relu, residual add with a scale, pooling) and a reused module."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.act = nn.ReLU()  # called three times
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.act(self.conv1(x))
        y = F.relu(self.conv2(x))
        x = self.act(x + 0.5 * self.conv3(y))
        x = self.act(self.conv4(F.max_pool2d(x, 2)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` equal parts."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleNet(nn.Module):
    """A ShuffleNetV2 unit: channel split, one branch convolved, concatenate, shuffle."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False),
                                    nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1, bias=False),
                                    nn.BatchNorm2d(8), nn.ReLU())
        self.head = conv_bn(16, 24, stride=2)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat([left, self.branch(right)], dim=1), 2)
        return self.fc(self.head(x).mean((2, 3)))


class SharedGroupedNet(nn.Module):
    """One tensor read by two grouped convolutions with different group counts (4 and 2)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.g4 = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.g2 = nn.Conv2d(16, 8, 3, padding=1, groups=2, bias=False)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(torch.cat([self.g4(x), self.g2(x)], dim=1).mean((2, 3)))


def randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and shifts (seeded), so that a wrong or unmasked
    channel cannot hide behind zeros; returns the model in eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.normal_(1, 0.3, generator=gen)
                m.bias.normal_(0, 0.3, generator=gen)
    return model.eval()
