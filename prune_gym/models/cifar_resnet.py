"""ResNets for CIFAR (He et al. 2016, section 4.2) with the parameter-free option-A shortcut.

The module names and shapes follow Idelbayev's ("akamaster") reference implementation
exactly, so the checkpoints most CIFAR pruning papers start from load without renaming.
The option-A shortcut is a real module (``PadShortcut``) rather than a lambda so that it
shows up in the module tree, where tracers and graph observations can see it.
"""

from __future__ import annotations

import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "PadShortcut",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]


class _ChannelPad(torch.autograd.Function):
    """``out[:, dst] = x[:, src] * gate[dst]``, zeros elsewhere: a channel pad as one op.

    Why one autograd op rather than ``F.pad``: Torch-Pruning's tracer reads the autograd
    graph and takes an op it does not know (``F.pad`` among them) for an elementwise one,
    which couples channels 1:1 across a pad that shifts and adds them. With the whole pad
    in a single node whose output belongs to :class:`PadShortcut`, a customized pruner
    (:mod:`prune_gym.pruners`) can own the mapping and keep it right after pruning.
    """

    @staticmethod
    def forward(ctx, x, src, dst, gate, out_channels):  # noqa: D102 - autograd protocol
        out = x.new_zeros((x.shape[0], out_channels, *x.shape[2:]))
        scale = gate[dst].to(x.dtype).view(1, -1, *[1] * (x.dim() - 2))  # autocast-safe
        out.index_copy_(1, dst, x.index_select(1, src) * scale)
        ctx.save_for_backward(src, dst, gate)
        ctx.in_channels = x.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: D102 - autograd protocol
        src, dst, gate = ctx.saved_tensors
        scale = gate[dst].to(grad.dtype).view(1, -1, *[1] * (grad.dim() - 2))
        scaled = grad.index_select(1, dst) * scale
        grad_x = grad.new_zeros((grad.shape[0], ctx.in_channels, *grad.shape[2:]))
        grad_x.index_copy_(1, src, scaled)
        return grad_x, None, None, None, None


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially and zero-pad channels; no parameters.

    Zero padding instead of a 1x1 projection keeps the parameter count of the original
    paper, and it is the coupling pruning tracers most often get wrong, so it is worth
    having as a named, inspectable op.

    The padding is held as a channel map (non-persistent buffers, so checkpoints are
    unchanged): input channel ``src[j]`` lands on output channel ``dst[j]``; unmapped
    output channels are zero. Unpruned, that is ``pad_front`` zeros, the input, and
    ``pad_back`` zeros. After channel pruning the map keeps each surviving input channel
    on the output channel it was added to, which front/back padding alone cannot say.
    ``gate`` (ones) scales each output channel: masked pruning zeroes entries of it.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 2) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise InvalidArgumentError(
                f"out_planes={out_planes} is smaller than in_planes={in_planes}; "
                "a padding shortcut can only add channels (use out_planes >= in_planes)"
            )
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.stride = stride
        extra = out_planes - in_planes
        # For the akamaster layout (out = 2 * in) this is planes // 4 on each side.
        self.pad_front = extra // 2
        self.pad_back = extra - self.pad_front
        self.register_buffer("src", torch.arange(in_planes), persistent=False)
        self.register_buffer("dst", torch.arange(in_planes) + self.pad_front, persistent=False)
        self.register_buffer("gate", torch.ones(out_planes), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return _ChannelPad.apply(x, self.src, self.dst, self.gate, self.out_planes)

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection (the CIFAR ResNet unit)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = PadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place, so that autograd-based tracers see a plain add.
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, n blocks per stage.

    Args:
        depth: 6n + 2 (20, 32, 44, 56, 110, ...).
        num_classes: Size of the final linear layer.
        in_channels: Input image channels (3 for RGB).
    """

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise InvalidArgumentError(
                f"depth={depth} is not of the form 6n+2 with n >= 1 "
                "(use 20, 32, 44, 56 or 110)"
            )
        if num_classes < 1:
            raise InvalidArgumentError(f"num_classes={num_classes} must be >= 1")
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self._in_planes = 16
        self.layer1 = self._make_stage(16, n, stride=1)
        self.layer2 = self._make_stage(32, n, stride=2)
        self.layer3 = self._make_stage(64, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        self._init_weights()

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(BasicBlock(self._in_planes, planes, stride if i == 0 else 1))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # Kaiming (He) init, as in the paper; BN starts as identity.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def resnet20(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-20 (0.27M parameters)."""
    return CifarResNet(20, num_classes, **kw)


def resnet32(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-32 (0.46M parameters)."""
    return CifarResNet(32, num_classes, **kw)


def resnet44(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-44 (0.66M parameters)."""
    return CifarResNet(44, num_classes, **kw)


def resnet56(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-56 (0.85M parameters), the usual CIFAR pruning baseline."""
    return CifarResNet(56, num_classes, **kw)


def resnet110(num_classes: int = 10, **kw) -> CifarResNet:
    """ResNet-110 (1.7M parameters)."""
    return CifarResNet(110, num_classes, **kw)
