"""Verification: prove, on the network at hand, that every group can really be pruned.

Torch-Pruning's tracer is right for most CNNs but not all (it merges the option-A
zero-padded shortcuts of CIFAR ResNets into one wrong group, for one). So after analysis
we trial-prune the groups, physically, and require of the result that it runs, keeps the
output shape, computes what the masked working copy computes, and has exactly the MACs
and parameters the closed-form cost model predicts (MACs measured by
``torch.utils.flop_counter.FlopCounterMode``). All groups are tried at once first (the
common case costs two trials); failing groups are found by bisection and excluded with
the reason, which ``net.describe()`` and a warning report.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from prune_gym.errors import ModelAnalysisError

if TYPE_CHECKING:
    from prune_gym.network import ChannelGroup, PrunableNetwork

# Adversarial trial states: a contiguous half breaks grouped convolutions and
# concatenations that a random choice might spare; the odd channels catch interleaving.
_PATTERNS = ("first_half", "odd")


def _trial_masks(net: PrunableNetwork, subset: list[ChannelGroup], pattern: str):
    masks = [np.ones(g.size, dtype=bool) for g in net.all_groups]
    for g in subset:
        if pattern == "first_half":
            masks[g.index][: g.size // 2] = False
        else:
            masks[g.index][1::2] = False
    return masks


def measure(model: torch.nn.Module, example_inputs) -> tuple[torch.Tensor, int, int]:
    """Output, MACs (FlopCounterMode FLOPs / 2) and parameter count of ``model``."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(*example_inputs)
    return out, counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def check_masks(net: PrunableNetwork, all_masks) -> str | None:
    """Why pruning to ``all_masks`` is unsafe, or None when physical, masked and priced agree."""
    try:
        model = net._prune_copy(all_masks).eval()
        out, macs, params = measure(model, net.example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure excludes the group
        return f"pruning it breaks the forward ({type(exc).__name__}: {str(exc)[:120]})"
    if tuple(out.shape) != net.output_shape:
        return f"pruning it changes the output shape to {tuple(out.shape)}"
    try:
        net._zero(all_masks)
        with torch.no_grad():
            masked = net.model(*net.example_inputs)
    finally:
        net.restore()
    scale = float(out.abs().max()) + 1.0
    if not torch.allclose(masked, out, rtol=1e-3, atol=1e-4 * scale):
        return "the masked and the physically pruned model disagree"
    predicted_macs = net.cost.macs(masks=all_masks)
    predicted_params = net.cost.params(masks=all_masks)
    if (predicted_macs, predicted_params) != (macs, params):
        return (f"the cost model cannot price it (predicted {predicted_macs} MACs / "
                f"{predicted_params} params, measured {macs} / {params})")
    return None


def _check_subset(net: PrunableNetwork, subset) -> str | None:
    for pattern in _PATTERNS:
        reason = check_masks(net, _trial_masks(net, subset, pattern))
        if reason:
            return reason
    return None


def _failing(net: PrunableNetwork, subset: list) -> list[tuple[ChannelGroup, str]]:
    """Groups of ``subset`` that fail alone, found by bisection (few failures, few checks)."""
    reason = _check_subset(net, subset)
    if reason is None:
        return []
    if len(subset) == 1:
        return [(subset[0], reason)]
    half = len(subset) // 2
    return _failing(net, subset[:half]) + _failing(net, subset[half:])


def warn_excluded(net: PrunableNetwork) -> None:
    """Warn, at the line that built ``net``, about groups that verification excluded."""
    from prune_gym.network import PruningWarning

    excluded = [g for g in net.excluded_groups if g.reason and "single channel" not in g.reason]
    if excluded:
        names = ", ".join(g.name for g in excluded[:5]) + (" ..." if len(excluded) > 5 else "")
        # warn -> verify_groups -> PrunableNetwork.__init__ -> the caller
        warnings.warn(f"{len(excluded)} channel group(s) cannot be pruned safely and are "
                      f"excluded ({names}); see net.describe() for the reasons",
                      PruningWarning, stacklevel=4)


def verify_groups(net: PrunableNetwork) -> None:
    """Exclude (with a reason) every group whose trial prune fails; warn about them."""
    for group, reason in _failing(net, net.groups):
        group.prunable, group.reason = False, reason
    if not net.groups:
        raise ModelAnalysisError(
            "model has no prunable layer: every channel group failed verification: "
            + "; ".join(f"{g.name}: {g.reason}" for g in net.all_groups))
    reason = _check_subset(net, net.groups)
    if reason:
        raise ModelAnalysisError(
            f"channel groups that prune safely one at a time fail together ({reason}); "
            "pass the offending layers in ignored_layers")
    warn_excluded(net)
