"""Torch-Pruning pruners for layers its tracer cannot follow on its own.

Why: Torch-Pruning couples the channels of an op it does not know one to one (it takes it
for an elementwise op). For the option-A shortcut of CIFAR ResNets (a channel pad) that
merges every residual stream of the network into one group with wrong indices, which
verification then has to exclude. Registered as a customized layer, the shortcut gets its
own pruner with distinct input and output functions, so Torch-Pruning keeps each stage's
stream in its own group (input side in the stage before, output side in the stage after)
and hands us the indices on each side; the pruner keeps the channel map consistent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from prune_gym.models.cifar_resnet import PadShortcut


def _kept(size: int, idxs: Sequence[int]) -> torch.Tensor:
    drop = torch.zeros(size, dtype=torch.bool)
    drop[torch.as_tensor(list(idxs), dtype=torch.long)] = True
    return ~drop


class PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Prunes :class:`~prune_gym.models.cifar_resnet.PadShortcut` on either side.

    Input channel pruned: its entry leaves the channel map (it was zero in the masked
    model, so nothing changes). Output channel pruned: it leaves the output, and an input
    channel that was added onto it is dropped (the masked model zeroes it through
    ``gate``, :data:`MASK_BUFFERS`). Surviving entries are renumbered on both sides, so
    each input channel still lands on the output channel it was added to. New tensors
    are assigned rather than written into, as Torch-Pruning's own functions do, so that
    :class:`prune_gym.physical.Snapshot` can undo it.
    """

    TARGET_MODULES = PadShortcut

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _kept(layer.out_planes, idxs)
        new_pos = torch.cumsum(keep.long(), 0) - 1  # old output channel -> new one
        alive = keep[layer.dst.cpu()].to(layer.dst.device)
        layer.src = layer.src[alive]
        layer.dst = new_pos.to(layer.dst.device)[layer.dst[alive]]
        layer.gate = layer.gate[keep.to(layer.gate.device)]
        layer.out_planes = int(keep.sum())
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = _kept(layer.in_planes, idxs)
        new_pos = (torch.cumsum(keep.long(), 0) - 1).to(layer.src.device)
        alive = keep.to(layer.src.device)[layer.src]
        layer.dst = layer.dst[alive]
        layer.src = new_pos[layer.src[alive]]
        layer.in_planes = int(keep.sum())
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_planes

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_planes


# layer type -> pruner, handed to DependencyGraph.build_dependency(customized_pruners=...)
CUSTOMIZED_PRUNERS = {PadShortcut: PadShortcutPruner()}

# layer type -> float buffers that masked pruning zeroes along dim 0 for pruned output
# channels, as it zeroes a layer's weights (they are put back by restore()).
MASK_BUFFERS = {PadShortcut: ("gate",)}
