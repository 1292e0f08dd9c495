"""Helpers for the graph-agent tests: a second network ("B") and shared padded sizes.

Network A is the embedded ``digits-cnn-v1`` (3 prunable groups, no blocks); network B is
the embedded ``digits-resnet-v1`` (residual blocks, >= 10 groups). Observed with the same
``max_*`` sizes, the two share one observation and action space, which is what lets one
policy act on both.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from prune_gym import PrunableNetwork


def network_b():
    """``(task, net)`` of the embedded residual network (trained on first use, then cached)."""
    from prune_gym.tasks import make_task

    task = make_task("digits-resnet-v1")
    net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - built now so that env copies carry it
    return task, net


def common_sizes(*nets, channels: bool = False) -> dict[str, int]:
    """The ``max_*`` kwargs under which every net in ``nets`` fits."""
    sizes = {"max_nodes": max(n.topology.num_nodes for n in nets),
             "max_edges": max(n.topology.num_edges for n in nets),
             "max_groups": max(len(n.groups) for n in nets)}
    if channels:
        sizes["max_channels"] = max(g.size for n in nets for g in n.groups)
    return sizes


def make_env(env_id: str, task, net, **kwargs) -> gym.Env:
    """An env on ``net`` with ``task``'s validation data and a small evaluation subset."""
    kwargs.setdefault("eval_samples", 100)
    return gym.make(env_id, model=net, val_data=task.val_data, **kwargs)


def as_batch(observations: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack observations the way SB3 hands them to a features extractor (float tensors)."""
    return {k: torch.as_tensor(np.stack([o[k] for o in observations])).float()
            for k in observations[0]}


def rollout(env: gym.Env, steps: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Observations of ``steps`` random steps (resetting at episode ends), all different."""
    rng = np.random.default_rng(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    while len(seen) < steps:
        action = env.action_space.sample()
        if isinstance(env.action_space, gym.spaces.Box):  # prune a little each step, by a
            # ratio drawn independently of the action's width, so that padded envs follow
            action = np.full(env.action_space.shape, rng.uniform(-1.0, -0.2), np.float32)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
        seen.append(obs)
    return seen
