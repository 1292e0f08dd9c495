"""The three pruning environments (registered with Gymnasium on ``import prune_gym``)."""

from __future__ import annotations

from prune_gym.envs.base import PruneEnv
from prune_gym.envs.channel_mask import ChannelMaskEnv
from prune_gym.envs.dnn_graph import DNNGraphEnv
from prune_gym.envs.layer_ratio import LayerRatioEnv

ENV_IDS = {"LayerRatio-v0": LayerRatioEnv, "DNNGraph-v0": DNNGraphEnv,
           "ChannelMask-v0": ChannelMaskEnv}

__all__ = ["ENV_IDS", "ChannelMaskEnv", "DNNGraphEnv", "LayerRatioEnv", "PruneEnv"]
