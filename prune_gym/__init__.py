"""prune-gym: reinforcement-learning environments for structured pruning of CNNs."""

from __future__ import annotations

import gymnasium as gym

from prune_gym import errors, parallel  # noqa: F401 - parallel: worker-thread rules
from prune_gym.errors import PruneGymError
from prune_gym.network import ChannelGroup, PrunableNetwork

__all__ = ["ENV_IDS", "ChannelGroup", "ChannelMaskEnv", "DNNGraphEnv", "LatencyModel",
           "LayerRatioEnv", "PrunableNetwork", "PruneGymError", "errors", "fit_latency_model",
           "load_latency_model", "to_pyg"]
__version__ = "0.1.0"

# The environments check the order of reset/step themselves (raising EnvStateError, a
# PruneGymError), so Gymnasium's OrderEnforcing wrapper, which raises its own error first,
# is left out.
ENV_IDS = ("LayerRatio-v0", "DNNGraph-v0", "ChannelMask-v0")
for _id in ENV_IDS:
    _cls = _id.split("-")[0] + "Env"
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"prune_gym.envs:{_cls}", order_enforce=False)

_LAZY = {"LayerRatioEnv": "prune_gym.envs", "DNNGraphEnv": "prune_gym.envs",
         "ChannelMaskEnv": "prune_gym.envs", "to_pyg": "prune_gym.pyg",
         "LatencyModel": "prune_gym.latency_model",
         "fit_latency_model": "prune_gym.latency_model",
         "load_latency_model": "prune_gym.latency_model"}


def __getattr__(name: str):
    """Import the environments and ``to_pyg`` on first use: they pull in torch-geometric."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'prune_gym' has no attribute {name!r}")
