"""Per-channel features of every channel group, for ChannelMask-v0's observation.

Computed once, from the unmasked weights: a channel's weight norms and BatchNorm scale do
not change while an episode masks other channels, so there is nothing to recompute per
step. A group can couple several producing layers (residual additions tie the output
channels of many convolutions); their contributions are summed per root channel through
the group's ``target -> root`` channel tables.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prune_gym.network import PrunableNetwork

CHANNEL_FEATURES = ("l1_norm", "l2_norm", "bn_scale", "position")


def _scaled(values: np.ndarray) -> np.ndarray:
    """Divide by the group maximum so features are in [0, 1] whatever the layer's scale."""
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


@torch.no_grad()
def channel_features(net: PrunableNetwork) -> list[np.ndarray]:
    """``(size, 4)`` float32 features per prunable group: ``CHANNEL_FEATURES`` in [0, 1]."""
    net.restore()  # read the original weights, not a masked state
    modules = dict(net.model.named_modules())
    out = []
    for group in net.groups:
        l1 = np.zeros(group.size)
        sq = np.zeros(group.size)
        bn = np.zeros(group.size)
        for member in group.members:
            module = modules[member.module]
            weight = getattr(module, "weight", None)
            if member.kind != "out" or not isinstance(weight, torch.Tensor) or weight.dim() < 1:
                continue
            if weight.shape[0] <= int(member.target_idx.max()):
                continue
            w = weight.detach().double().reshape(weight.shape[0], -1)[member.target_idx]
            if isinstance(module, nn.modules.batchnorm._NormBase) or weight.dim() == 1:
                np.add.at(bn, member.root_idx, w.abs().squeeze(1).numpy())
            else:
                np.add.at(l1, member.root_idx, w.abs().sum(1).numpy())
                np.add.at(sq, member.root_idx, (w * w).sum(1).numpy())
        position = np.arange(group.size) / max(group.size - 1, 1)
        feats = np.stack([_scaled(l1), _scaled(np.sqrt(sq)), _scaled(bn), position], axis=1)
        out.append(np.clip(feats, 0.0, 1.0).astype(np.float32))
    return out


def padded_channel_features(net: PrunableNetwork, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Features stacked per group and padded: ``(G, max_size, 4)`` and a ``(G, max_size)``
    int8 mask of real channels."""
    feats = channel_features(net)
    table = np.zeros((len(feats), max_size, len(CHANNEL_FEATURES)), dtype=np.float32)
    valid = np.zeros((len(feats), max_size), dtype=np.int8)
    for i, f in enumerate(feats):
        table[i, : len(f)] = f
        valid[i, : len(f)] = 1
    return table, valid
