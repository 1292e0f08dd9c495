"""Shared sizes (``max_nodes``/``max_edges``/``max_groups``/``max_channels``), the node->group
key and the signed cost: what lets one policy act on networks of different sizes, and a
Lagrange multiplier fall as well as rise."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import prune_gym
from prune_gym import ENV_IDS, PrunableNetwork
from prune_gym.errors import InvalidArgumentError

SIZES = {"max_nodes": 64, "max_edges": 80, "max_groups": 12}


class TwoStageResNet(nn.Module):
    """A network unlike the digits CNN: residual blocks, a projection shortcut, 1-channel 8x8."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12),
                               nn.ReLU(), nn.Conv2d(12, 8, 3, padding=1, bias=False),
                               nn.BatchNorm2d(8))
        self.b = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                               nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1, bias=False),
                               nn.BatchNorm2d(24))
        self.short = nn.Sequential(nn.Conv2d(8, 24, 1, 2, bias=False), nn.BatchNorm2d(24))
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(self.short(x) + self.b(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def other_net(task) -> PrunableNetwork:
    torch.manual_seed(0)
    return PrunableNetwork(TwoStageResNet().eval(), task.example_inputs)


def sizes(env_id: str) -> dict:
    return {**SIZES, "max_channels": 80} if env_id == "ChannelMask-v0" else dict(SIZES)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_two_networks_share_one_space_and_pass_the_checker(make, other_net, task, env_id):
    from gymnasium.utils.env_checker import check_env

    a = make(env_id, **sizes(env_id))
    b = make(env_id, model=other_net, **sizes(env_id))
    assert a.observation_space == b.observation_space and a.action_space == b.action_space
    assert a.unwrapped.num_groups != b.unwrapped.num_groups
    check_env(b.unwrapped, skip_render_check=True)
    obs, _ = b.reset(seed=0)
    assert obs["node_features"].shape == (64, prune_gym.observations.NUM_NODE_FEATURES)
    assert obs["group"].shape == (64,) and obs["group"].dtype == np.int16


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_padding_changes_nothing_an_episode_does(make, env_id) -> None:
    """The same actions on the real dims, anything on the padded ones: the same episode."""
    exact, padded = make(env_id), make(env_id, **sizes(env_id))
    rng = np.random.default_rng(0)
    for env in (exact, padded):
        env.reset(seed=0)
    done = False
    while not done:
        small = exact.action_space.sample()
        if env_id == "ChannelMask-v0":
            big = rng.integers(0, 2, padded.action_space.n).astype(np.int8)
            big[: small.size] = small
        elif env_id == "DNNGraph-v0":
            big = rng.uniform(-1, 1, padded.action_space.shape).astype(np.float32)
            big[: small.size] = small
        else:
            big = small
        out_a, out_b = exact.step(small), padded.step(big)
        assert out_a[1:4] == out_b[1:4]
        assert {k: v for k, v in out_a[4].items()} == {k: v for k, v in out_b[4].items()}
        n = exact.unwrapped.max_nodes
        np.testing.assert_array_equal(out_a[0]["node_features"],
                                      out_b[0]["node_features"][:n])
        assert not out_b[0]["node_features"][n:].any() and (out_b[0]["group"][n:] == -1).all()
        done = out_a[2] or out_a[3]


@pytest.mark.parametrize("which", ["digits", "other"])
def test_group_key_names_the_group_owning_each_nodes_outputs(net, other_net, which) -> None:
    net = net if which == "digits" else other_net
    env = gym.make("DNNGraph-v0", model=net, val_data=(torch.zeros(4, 1, 8, 8),
                                                        torch.zeros(4, dtype=torch.long)))
    obs, _ = env.reset(seed=0)
    topo, key = env.unwrapped.net.topology, obs["group"]
    for g, group in enumerate(env.unwrapped.net.groups):
        producers = {m.module for m in group.members if m.kind == "out"}
        nodes = [n for n, mod in enumerate(topo.module) if mod in producers]
        assert nodes and all(key[n] == g for n in nodes), group.name
    real = key[: topo.num_nodes]
    assert set(real[real >= 0]) == set(range(len(env.unwrapped.net.groups)))
    batch = prune_gym.to_pyg(obs)
    np.testing.assert_array_equal(batch.group.numpy(), real)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_signed_cost_is_the_unclipped_margin_at_the_end(make, net, env_id) -> None:
    env = make(env_id, budget=0.5)
    env.action_space.seed(1)
    signs = set()
    for episode in range(10):
        env.reset(seed=episode)
        done = False
        while not done:
            action = env.action_space.sample()
            if episode % 2 and env_id != "ChannelMask-v0":
                action = np.full_like(action, 1.0)  # prune as much as allowed: under budget
            _, _, term, trunc, info = env.step(action)
            done = term or trunc
            if not done:
                assert info["signed_cost"] == 0.0
        margin = info["macs"] / (0.5 * net.base_macs) - 1
        assert math.isclose(info["signed_cost"], margin, rel_tol=1e-12, abs_tol=1e-12)
        assert info["cost"] == max(0.0, info["signed_cost"])
        signs.add(np.sign(info["signed_cost"]))
    assert -1.0 in signs  # it does go negative: under budget is visible to the agent


@pytest.mark.parametrize("argument, value, words", [
    ("max_nodes", 3, "max_nodes=3 is too small"),
    ("max_edges", 1, "max_edges=1 is too small"),
    ("max_groups", 2, "max_groups=2 is too small"),
    ("max_groups", 2.5, "max_groups=2.5"),
])
def test_too_small_sizes_are_named(make, argument, value, words) -> None:
    for env_id in ENV_IDS:
        with pytest.raises(InvalidArgumentError, match=words):
            make(env_id, **{argument: value})


def test_too_few_channels_are_named(make, net) -> None:
    largest = max(g.size for g in net.groups)
    with pytest.raises(InvalidArgumentError, match=f"max_channels=8 .*>= {largest}"):
        make("ChannelMask-v0", max_channels=8)
