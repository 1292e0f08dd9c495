"""AMC's state: one row of per-layer features for the layer being decided.

He et al. (ECCV 2018), Eq. (1), describe layer ``t`` by
``(t, n, c, h, w, stride, k, FLOPs[t], reduced, rest, a_{t-1})``: its index, the kernel's
``n x c x k x k`` shape, the input's ``c x h x w`` size, its stride, its FLOPs, the FLOPs
reduced so far, the FLOPs of the layers after it and the previous action; each feature is
min-max normalised over the network's layers so that all lie in [0, 1]. The reference code
(mit-han-lab/amc, ``env/channel_pruning_env.py``, ``_build_state_embedding`` and ``step``)
normalises the static columns over the layers and gives the last three as fractions of the
original FLOPs, ``a_{t-1}`` being the preserve ratio actually applied (1 on the first
layer); we do the same.

Our layer is a prunable channel group: its first conv (or linear) layer gives ``n, c, h,
w, stride, k`` and ``FLOPs[t]`` (multiply-accumulates of one forward of the example input).
Where the code and the paper differ we follow the paper: the code lists a layer type and a
weight count instead of ``h, w`` and ``FLOPs[t]``, its ``reduced`` counts the layers not yet
decided as pruned to the lower bound, and its first ``rest`` is a weight fraction. A
feature that is the same for every layer carries no information and is 0 here (the code
leaves it unnormalised, which would break the [0, 1] bound).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

FEATURES = ("index", "n", "c", "h", "w", "stride", "k", "flops", "reduced", "rest",
            "previous_action")
STATE_SIZE = len(FEATURES)
_STATIC = 8  # index .. flops
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _layer_calls(net) -> tuple[dict[str, tuple[int, tuple, int]], dict[str, nn.Module]]:
    """For each conv/linear module: (order of its first call, input shape, MACs of it),
    and the modules by name (of a pristine copy: the working model may be masked)."""
    model = net.original_copy().eval()
    calls: dict[str, tuple[int, tuple, int]] = {}
    names = {m: n for n, m in model.named_modules()}
    order = [0]

    def hook(module, args, out):
        name = names[module]
        if name not in calls:
            channels = out.shape[1] if isinstance(module, nn.modules.conv._ConvNd) \
                else out.shape[-1]
            macs = out.numel() // channels * module.weight.numel()
            calls[name] = (order[0], tuple(args[0].shape), int(macs))
        order[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _LAYERS)]
    try:
        with torch.no_grad():
            model(*net.example_inputs)
    finally:
        for h in handles:
            h.remove()
    return calls, dict(model.named_modules())


def layer_table(net) -> tuple[np.ndarray, np.ndarray]:
    """The static columns (index .. FLOPs, normalised) of every group, and each group's
    ``rest``: the MACs of the conv/linear calls after its layer, as a fraction of all."""
    calls, modules = _layer_calls(net)
    total = sum(macs for _, _, macs in calls.values())
    rows, rest = [], []
    for t, group in enumerate(net.groups):
        # the group's first conv/linear layer, by call order (its name first, then members)
        names = [group.name, *[m.module for m in group.members if m.kind == "out"],
                 *[m.module for m in group.members]]
        name = min((n for n in names if n in calls), key=lambda n: calls[n][0])
        layer, (order, shape, macs) = modules[name], calls[name]
        if isinstance(layer, nn.modules.conv._ConvNd):
            n, c = layer.out_channels, layer.in_channels
            h, w = (shape[2], shape[3]) if len(shape) >= 4 else (shape[-1], 1)
            stride, k = layer.stride[0], layer.kernel_size[0]
        else:  # AMC's code describes a linear layer with stride 0 and kernel 1
            n, c, h, w, stride, k = layer.out_features, layer.in_features, 1, 1, 0, 1
        rows.append([t, n, c, h, w, stride, k, macs])
        rest.append(sum(m for o, _, m in calls.values() if o > order) / total)
    table = np.asarray(rows, dtype=np.float64)
    low, span = table.min(axis=0), np.ptp(table, axis=0)
    table = np.where(span > 0, (table - low) / np.where(span > 0, span, 1.0), 0.0)
    return table, np.asarray(rest, dtype=np.float64)


class AMCObservation(gym.ObservationWrapper):
    """LayerRatio-v0's observation replaced by AMC's 11 features of the current group.

    Everything is read from what the environment publishes: ``info["step"]`` (the group
    being decided), ``info["keep"]`` (channels kept per group) and ``info["macs"]``. After the
    last group the state is the last group's row with the final ``reduced`` and
    ``a_{t-1}`` (AMC returns the last layer's row too; no value is bootstrapped from it).
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        self.table, self.rest = layer_table(base.net)
        self.sizes = np.asarray(base.sizes, dtype=np.float64)
        self.base_macs = float(base.net.base_macs)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(STATE_SIZE,), dtype=np.float32)
        self._info: dict = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._info = info
        return self.observation(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._info = info
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation) -> np.ndarray:
        t, keep = int(self._info["step"]), self._info["keep"]
        row = min(t, len(self.table) - 1)
        reduced = max(0.0, 1.0 - float(self._info["macs"]) / self.base_macs)
        rest = self.rest[t] if t < len(self.rest) else 0.0
        previous = 1.0 if t == 0 else keep[t - 1] / self.sizes[t - 1]
        state = np.concatenate([self.table[row], [reduced, rest, previous]])
        return np.clip(state, 0.0, 1.0).astype(np.float32)
