"""The cost critic bolted onto any actor-critic policy, and the advantage it feeds.

A Lagrangian agent needs a second value function, for the cost. Rather than a policy
subclass per policy kind (MLP, multi-input, graph, maskable), the cost head is added to
the policy the user chose: a fresh copy of its ``value_net`` reading the same critic
latent. That latent is taken where ``value_net`` reads it (a forward pre-hook), so the
cost value follows exactly the critic path of any policy class (``extract_features ->
mlp_extractor.forward_critic -> value_net``, however the policy builds it) and comes out
of the same forward pass as the value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch as th

from prune_gym.errors import InvalidArgumentError


def lagrangian_advantage(reward_adv: th.Tensor, cost_adv: th.Tensor, lam: float, *,
                         reward_mean: float, reward_std: float | None, cost_mean: float,
                         cost_std: float | None = None) -> th.Tensor:
    """``(A_r - lambda * A_c) / (1 + lambda)``, ``A_r`` standardised with the given rollout
    statistics (``reward_std=None``: not standardised) and ``A_c`` centred (and also scaled
    when ``cost_std`` is given).

    Centring without scaling (OmniSafe's PPOLag, the default) keeps ``A_c`` in cost units:
    ``lambda`` prices one unit of cost against one standard deviation of reward advantage,
    so the ``lambda`` that balances them depends on the cost's scale and on how much the
    rollout's rewards vary. Scaling both (FSRL) makes ``lambda = 1`` weigh them equally
    whatever the scales. The ``1 + lambda`` keeps the policy step bounded as ``lambda``
    grows.
    """
    if reward_std is not None:
        reward_adv = (reward_adv - reward_mean) / (reward_std + 1e-8)
    cost_adv = cost_adv - cost_mean
    if cost_std is not None:
        cost_adv = cost_adv / (cost_std + 1e-8)
    return (reward_adv - lam * cost_adv) / (1.0 + lam)


class Captured:
    """Holds what :func:`critic_latent` captured."""

    value: th.Tensor | None = None


@contextmanager
def critic_latent(policy: Any) -> Iterator[Captured]:
    """Capture the input of ``policy.value_net`` (the critic latent) while inside."""
    box = Captured()

    def hook(_module: th.nn.Module, args: tuple[th.Tensor, ...]) -> None:
        box.value = args[0]

    handle = policy.value_net.register_forward_pre_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def cost_values(policy: Any, obs: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
    """Cost values of a batch of (tensor) observations, on the policy's critic path."""
    with critic_latent(policy) as latent:
        policy.predict_values(obs)
    return policy.cost_value_net(latent.value).flatten()


def add_cost_head(policy: Any, lr: float, owner: str) -> None:
    """Give ``policy`` a ``cost_value_net`` like its ``value_net``, freshly initialised, and
    rebuild its optimizer so that the head is trained with the rest.

    The head is initialised on a forked RNG: the algorithm's random stream (action
    sampling, minibatches) stays exactly what it would be without the head.

    Args:
        policy: SB3's ``ActorCriticPolicy`` or sb3-contrib's ``MaskableActorCriticPolicy``
            (not a subclass of it), or any policy with a ``value_net`` on its critic path.
        lr: the optimizer's initial learning rate (the algorithm's ``lr_schedule(1)``).
        owner: the algorithm's name, for the error message.
    """
    if not all(hasattr(policy, a) for a in ("value_net", "predict_values", "evaluate_actions")):
        raise InvalidArgumentError(
            f"{owner} needs an actor-critic policy with a value_net (a cost head is put beside "
            f"it); got {type(policy).__name__}")
    device = next(policy.parameters()).device
    with th.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        head = copy.deepcopy(policy.value_net)
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        if getattr(policy, "ortho_init", False):
            head.apply(partial(policy.init_weights, gain=1))  # as SB3 does for value_net
    policy.cost_value_net = head
    policy.optimizer = policy.optimizer_class(policy.parameters(), lr=lr,
                                              **policy.optimizer_kwargs)
