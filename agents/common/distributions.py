"""SB3 action distributions with padded dimensions masked out.

When networks of different sizes share one action space (``max_groups``,
``max_channels``), some action dimensions belong to no group or channel of the network at
hand. They must not move the policy: a masked dimension is never sampled (its action is
0), and adds exactly 0 to the log-probability and to the entropy, so PPO's probability
ratio and entropy bonus see only the real dimensions. SB3's distributions sum over every
dimension, hence these subclasses; everything else (``get_actions``, ``actions_from_params``)
is SB3's.
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    DiagGaussianDistribution,
)
from torch.distributions import Bernoulli


def apply_bit_masks(logits: torch.Tensor, action_masks) -> torch.Tensor:
    """Bernoulli ``logits`` (``(B, S)``) under sb3-contrib's MultiBinary action masks
    (``(B, 2 * S)``: a ``(can be 0, can be 1)`` pair per bit): a bit that cannot be 1 gets
    probability 0, one that cannot be 0 probability 1."""
    masks = torch.as_tensor(np.asarray(action_masks), dtype=torch.bool,
                            device=logits.device).reshape(logits.shape[0], -1, 2)
    big = torch.finfo(logits.dtype).max / 4
    logits = torch.where(masks[..., 1], logits, torch.full_like(logits, -big))
    return torch.where(masks[..., 0], logits, torch.full_like(logits, big))


class MaskedDiagGaussianDistribution(DiagGaussianDistribution):
    """A diagonal Gaussian whose masked dimensions are fixed at 0 and carry no probability.

    ``proba_distribution(mean, log_std, mask)``: ``mask`` is ``(B, A)`` (1 = real).
    ``log_std`` may be one value shared by all dimensions (what a policy for networks of
    any size needs: a per-dimension std would be tied to one network's group order).
    """

    mask: torch.Tensor

    def proba_distribution(self, mean_actions: torch.Tensor, log_std: torch.Tensor,
                           mask: torch.Tensor | None = None) -> MaskedDiagGaussianDistribution:
        super().proba_distribution(mean_actions, log_std)
        self.mask = torch.ones_like(mean_actions) if mask is None else mask.to(mean_actions)
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return (self.distribution.log_prob(actions) * self.mask).sum(dim=1)

    def entropy(self) -> torch.Tensor:
        return (self.distribution.entropy() * self.mask).sum(dim=1)

    def sample(self) -> torch.Tensor:
        return self.distribution.rsample() * self.mask

    def mode(self) -> torch.Tensor:
        return self.distribution.mean * self.mask


class MaskedBernoulliDistribution(BernoulliDistribution):
    """Independent Bernoullis (MultiBinary actions) whose masked bits are always 0.

    ``proba_distribution(action_logits, mask)``: ``mask`` is ``(B, A)`` (1 = real bit).
    """

    mask: torch.Tensor

    def proba_distribution(self, action_logits: torch.Tensor,
                           mask: torch.Tensor | None = None) -> MaskedBernoulliDistribution:
        self.distribution = Bernoulli(logits=action_logits)
        self.mask = torch.ones_like(action_logits) if mask is None else mask.to(action_logits)
        return self

    def apply_masking(self, action_masks) -> None:
        """Honour sb3-contrib's action masks (``(B, 2 * S)``, a ``(can be 0, can be 1)``
        pair per bit), as its maskable distributions do: a bit allowed one value only
        takes it."""
        self.distribution = Bernoulli(logits=apply_bit_masks(self.distribution.logits,
                                                             action_masks))

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return (self.distribution.log_prob(actions.to(self.mask)) * self.mask).sum(dim=1)

    def entropy(self) -> torch.Tensor:
        return (self.distribution.entropy() * self.mask).sum(dim=1)

    def sample(self) -> torch.Tensor:
        return self.distribution.sample() * self.mask

    def mode(self) -> torch.Tensor:
        return torch.round(self.distribution.probs) * self.mask
