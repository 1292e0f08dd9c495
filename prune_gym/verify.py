"""Verification: prove, on the network at hand, that every group can really be pruned.

Torch-Pruning's tracer is right for most CNNs but not all (it merges the option-A
zero-padded shortcuts of CIFAR ResNets into one wrong group, for one). So after analysis
we trial-prune the groups, physically, and require of the result that it runs, keeps the
output shape, computes what the masked working copy computes, and has exactly the MACs
and parameters the closed-form cost model predicts (MACs measured by
``torch.utils.flop_counter.FlopCounterMode``).

Why it is organised for speed: analysis is paid by every environment and every worker
process, and a trial used to dominate it (a deep copy of the model each). Trials now
prune the working copy in place and put it back (:mod:`prune_gym.physical`). All groups
are tried at once first: the common case is two trials, one per adversarial pattern. When
that fails, the failing group is searched for with the pattern that failed, checking only
one half at each level (the other half is implied), then the rest is tried at once again.
A group is excluded only after it has failed alone; the groups that stay have passed
together, with both patterns. Interactions that no single group explains fall back to a
full bisection and, if the survivors still fail together, to an error.
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


class PruningWarning(UserWarning):
    """Raised (as a warning) when analysis excludes channel groups from pruning."""


# Adversarial trial states: a contiguous half breaks grouped convolutions and
# concatenations that a random choice might spare; the odd channels catch interleaving.
_PATTERNS = ("first_half", "odd")
_COST_FAILURE = "the cost model cannot price it"


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


def check_masks(net: PrunableNetwork, all_masks, exact_cost: bool = True) -> str | None:
    """Why pruning to ``all_masks`` is unsafe, or None when physical, masked and priced agree.

    The checks run cheapest first (a plain forward fails fast; counting FLOPs dispatches
    every op through Python). ``exact_cost=False`` skips the cost check, for searches that
    look for a failure of another kind.
    """
    try:
        with net.pruned_to_masks(all_masks) as model, torch.no_grad():
            out = model(*net.example_inputs)
            if tuple(out.shape) != net.output_shape:
                return f"pruning it changes the output shape to {tuple(out.shape)}"
            if exact_cost:
                _, macs, params = measure(model, net.example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure excludes the group
        return f"pruning it breaks the forward ({type(exc).__name__}: {str(exc)[:120]})"
    try:
        net.apply_masks(all_masks)
        with torch.no_grad():
            masked = net.model(*net.example_inputs)
    finally:
        net.restore()
    scale = float(out.abs().max()) + 1.0
    if not torch.allclose(masked, out, rtol=1e-3, atol=1e-4 * scale):
        return "the masked and the physically pruned model disagree"
    if not exact_cost:
        return None
    predicted_macs = net.cost.macs(masks=all_masks)
    predicted_params = net.cost.params(masks=all_masks)
    if (predicted_macs, predicted_params) != (macs, params):
        return (f"{_COST_FAILURE} (predicted {predicted_macs} MACs / "
                f"{predicted_params} params, measured {macs} / {params})")
    return None


def _check_subset(net: PrunableNetwork, subset, patterns=_PATTERNS,
                  exact_cost: bool = True) -> tuple[str, str] | None:
    """``(pattern, reason)`` of the first pattern under which ``subset`` fails, else None."""
    for pattern in patterns:
        reason = check_masks(net, _trial_masks(net, subset, pattern), exact_cost)
        if reason:
            return pattern, reason
    return None


def _bisect(net: PrunableNetwork, subset: list) -> list[tuple[ChannelGroup, str]]:
    """Groups of ``subset`` that fail alone, by full bisection (both halves checked)."""
    failed = _check_subset(net, subset)
    if failed is None:
        return []
    if len(subset) == 1:
        return [(subset[0], failed[1])]
    half = len(subset) // 2
    return _bisect(net, subset[:half]) + _bisect(net, subset[half:])


def _locate(net: PrunableNetwork, subset: list, pattern: str,
            exact_cost: bool) -> tuple[ChannelGroup, str] | None:
    """One group that fails alone under ``pattern`` in a ``subset`` that fails under it.

    Only the first half is checked at each level: if it passes, the failure is in the
    second half (or is an interaction, which the final single-group check exposes). The
    cost is checked only when the failure being searched for was a cost mismatch.
    """
    reason = None
    while len(subset) > 1:
        half = len(subset) // 2
        failed = _check_subset(net, subset[:half], (pattern,), exact_cost)
        if failed:
            subset, reason = subset[:half], failed[1]
        else:
            subset, reason = subset[half:], None
    if reason is None:
        failed = _check_subset(net, subset)
        reason = failed[1] if failed else None
    return (subset[0], reason) if reason else None


def _failing(net: PrunableNetwork, groups: list) -> tuple[list[tuple[ChannelGroup, str]], bool]:
    """Groups to exclude, and whether the others have been seen to pass together."""
    remaining, found = list(groups), []
    while remaining:
        failed = _check_subset(net, remaining)
        if failed is None:
            return found, True
        if len(remaining) == 1:
            return [*found, (remaining[0], failed[1])], True
        culprit = _locate(net, remaining, failed[0],
                          exact_cost=failed[1].startswith(_COST_FAILURE))
        if culprit is None:  # an interaction: no single group explains it
            return found + _bisect(net, remaining), False
        found.append(culprit)
        remaining.remove(culprit[0])
    return found, True


def warn_excluded(net: PrunableNetwork) -> None:
    """Warn, at the line that built ``net``, about groups that verification excluded."""
    excluded = [g for g in net.excluded_groups if g.reason and "single channel" not in g.reason]
    if excluded:
        names = ", ".join(g.name for g in excluded[:5]) + (" ..." if len(excluded) > 5 else "")
        # warn -> verify_groups -> PrunableNetwork.__init__ -> the caller
        warnings.warn(f"{len(excluded)} channel group(s) cannot be pruned safely and are "
                      f"excluded ({names}); see net.describe() for the reasons",
                      PruningWarning, stacklevel=4)


def verify_groups(net: PrunableNetwork) -> None:
    """Exclude (with a reason) every group whose trial prune fails; warn about them."""
    failures, together = _failing(net, net.groups)
    for group, reason in failures:
        group.prunable, group.reason = False, reason
    if not net.groups:
        raise ModelAnalysisError(
            "model has no prunable layer: every channel group failed verification: "
            + "; ".join(f"{g.name}: {g.reason}" for g in net.all_groups))
    failed = None if together else _check_subset(net, net.groups)
    if failed:
        raise ModelAnalysisError(
            f"channel groups that prune safely one at a time fail together ({failed[1]}); "
            "pass the offending layers in ignored_layers")
    # what an env does next with a group: rank its channels (masks from counts follow)
    for group, reason in net.unrankable_groups():
        group.prunable, group.reason = False, reason
    if not net.groups:
        raise ModelAnalysisError(
            "model has no prunable layer: no channel group can be ranked by importance: "
            + "; ".join(f"{g.name}: {g.reason}" for g in net.all_groups))
    warn_excluded(net)
