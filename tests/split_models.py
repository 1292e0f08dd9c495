"""Small architectures with the channel splits of the model libraries people prune: a residual
over part of the channels, CSP and Res2Net splits, mixed-kernel and selective-kernel blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tests.toy_models import conv_bn


class PartialResidualNet(nn.Module):
    """A residual add over the first channels only (``y[:, :c] + x``): the pattern that made
    Torch-Pruning's group search run forever."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.wide = conv_bn(16, 24)
        self.head = conv_bn(16, 32, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.wide(x)[:, :16] + x
        return self.fc(self.head(x).mean((2, 3)))


class CSPNet(nn.Module):
    """Cross-stage-partial stages (the YOLO backbones' block): split in two halves along
    channels (``chunk`` in one stage, ``split`` in the other), convolve one, concatenate."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.pre1 = conv_bn(16, 32)
        self.block1 = nn.Sequential(conv_bn(16, 16), conv_bn(16, 16))
        self.post1 = conv_bn(32, 32, stride=2)
        self.pre2 = conv_bn(32, 48)
        self.block2 = nn.Sequential(conv_bn(24, 24), conv_bn(24, 24))
        self.post2 = conv_bn(48, 40)
        self.fc = nn.Linear(40, num_classes)

    def forward(self, x):
        x = self.pre1(self.stem(x))
        a, b = x.chunk(2, dim=1)
        b = b + self.block1(b)
        x = self.pre2(self.post1(torch.cat([b, a], dim=1)))
        a, b = torch.split(x, [24, 24], dim=1)
        x = self.post2(torch.cat([a, self.block2(b)], dim=1))
        return self.fc(x.mean((2, 3)))


class Res2NetBlock(nn.Module):
    """A Res2Net bottleneck: the channels split into scales, each scale convolved after the
    previous scale's output is added to it, concatenated, plus the residual."""

    def __init__(self, channels: int = 32, width: int = 8, scales: int = 4):
        super().__init__()
        self.width = width
        self.reduce = conv_bn(channels, width * scales)
        self.convs = nn.ModuleList(conv_bn(width, width) for _ in range(scales - 1))
        self.expand = nn.Sequential(nn.Conv2d(width * scales, channels, 1, bias=False),
                                    nn.BatchNorm2d(channels))

    def forward(self, x):
        parts = torch.split(self.reduce(x), self.width, dim=1)
        out, sp = [], None
        for i, conv in enumerate(self.convs):
            sp = parts[i] if sp is None else sp + parts[i]
            sp = conv(sp)
            out.append(sp)
        out.append(parts[-1])
        return F.relu(x + self.expand(torch.cat(out, dim=1)))


class Res2Net(nn.Module):
    """A stem and two Res2Net blocks."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.blocks = nn.Sequential(Res2NetBlock(), Res2NetBlock())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class MixConv(nn.Module):
    """MixNet's mixed depthwise conv: the channels split across kernel sizes, concatenated."""

    def __init__(self, splits=(8, 8, 16)):
        super().__init__()
        self.splits = list(splits)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, 3 + 2 * i, padding=1 + i, groups=c, bias=False)
            for i, c in enumerate(splits))

    def forward(self, x):
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


class MixNet(nn.Module):
    """Inverted residual blocks with a mixed-kernel depthwise conv."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32),
                                    nn.ReLU())
        self.mix = MixConv()
        self.bn = nn.BatchNorm2d(32)
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.head = conv_bn(16, 48, stride=2)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(F.relu(self.bn(self.mix(self.expand(x)))))
        return self.fc(self.head(x).mean((2, 3)))


class SelectiveKernel(nn.Module):
    """SKNet's selective-kernel conv: two branches, attention over them from their sum."""

    def __init__(self, channels: int = 32, attn: int = 8):
        super().__init__()
        self.paths = nn.ModuleList([conv_bn(channels, channels),
                                    nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 2, 2,
                                                            bias=False),
                                                  nn.BatchNorm2d(channels), nn.ReLU())])
        self.reduce = nn.Conv2d(channels, attn, 1)
        self.select = nn.Conv2d(attn, channels * 2, 1)

    def forward(self, x):
        paths = torch.stack([p(x) for p in self.paths], dim=1)  # B, 2, C, H, W
        b, n, c, h, w = paths.shape
        gate = self.select(F.relu(self.reduce(paths.sum(1).mean((2, 3), keepdim=True))))
        gate = torch.softmax(gate.view(b, n, c, 1, 1), dim=1)
        return (paths * gate).sum(1)


class SKNet(nn.Module):
    """A stem and a selective-kernel block with a residual."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.sk = SelectiveKernel()
        self.head = conv_bn(32, 48, stride=2)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.sk(x)
        return self.fc(self.head(x).mean((2, 3)))


class RexBlock(nn.Module):
    """RexNet's block: the residual is added to the first ``cin`` of ``cout`` channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin = cin
        self.body = nn.Sequential(conv_bn(cin, cout * 2), nn.Conv2d(cout * 2, cout, 1, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.body(x)
        return torch.cat([y[:, :self.cin] + x, y[:, self.cin:]], dim=1)


class PartialResidualStack(nn.Module):
    """RexNet-style blocks whose channels grow by 4 each (partial residuals in a row: without
    the cut at the slices, Torch-Pruning's group search does not end on this net)."""

    def __init__(self, blocks: int = 9, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.Sequential(*(RexBlock(16 + 4 * i, 20 + 4 * i) for i in range(blocks)))
        self.head = conv_bn(16 + 4 * blocks, 32, stride=2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class CSPBottleneck(nn.Module):
    """YOLO's bottleneck: a 1x1 conv to a hidden width, a 3x3 conv back, a residual."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.cv1 = conv_bn(channels, hidden)
        self.cv2 = conv_bn(hidden, channels)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class CSPStage(nn.Module):
    """A CSP-Darknet stage as in YOLOv8's C2f / timm's CrossStage: a strided conv, a 1x1
    conv whose output is chunked in two, bottlenecks on one half, concatenate, a 1x1 conv."""

    def __init__(self, cin: int, cout: int, blocks: int):
        super().__init__()
        self.down = conv_bn(cin, cout, stride=2)
        self.expand = conv_bn(cout, cout)
        self.blocks = nn.Sequential(*(CSPBottleneck(cout // 2, cout // 2) for _ in range(blocks)))
        self.transition = conv_bn(cout, cout)

    def forward(self, x):
        keep, work = self.expand(self.down(x)).chunk(2, dim=1)
        return self.transition(torch.cat([self.blocks(work), keep], dim=1))


class CSPDarknet(nn.Module):
    """A small CSP-Darknet backbone (the YOLO family's) with a classification head."""

    def __init__(self, num_classes: int = 10, widths=(16, 32, 64, 96), blocks=(1, 2, 2)):
        super().__init__()
        self.stem = conv_bn(3, widths[0])
        self.stages = nn.Sequential(*(CSPStage(cin, cout, n) for cin, cout, n
                                      in zip(widths, widths[1:], blocks)))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.fc(self.stages(self.stem(x)).mean((2, 3)))
