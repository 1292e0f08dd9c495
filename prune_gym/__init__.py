"""prune-gym: reinforcement-learning environments for structured pruning of CNNs."""

from __future__ import annotations

from prune_gym import errors
from prune_gym.errors import PruneGymError
from prune_gym.network import ChannelGroup, PrunableNetwork

__all__ = ["ChannelGroup", "PrunableNetwork", "PruneGymError", "errors"]
__version__ = "0.1.0"
