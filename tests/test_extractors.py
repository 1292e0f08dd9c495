"""Graph feature extractors: they train inside plain SB3 PPO on every env, embed each graph
of a batch exactly as alone, ignore padding, read edge types, blocks and channels, and
reject observation spaces that are not graphs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor

from agents.common.torch_layers import GATExtractor, MultiStageGNNExtractor
from prune_gym import ENV_IDS
from prune_gym.errors import InvalidArgumentError
from tests.graph_envs import as_batch, common_sizes, make_env, network_b, rollout

EXTRACTORS = (GATExtractor, MultiStageGNNExtractor)
SMALL = {"hidden": 16}
STEPS = 256


@pytest.fixture(scope="module")
def b():
    return network_b()


def build(cls, space, **kwargs):
    torch.manual_seed(0)
    return cls(space, **{**SMALL, **kwargs}).eval()


@pytest.mark.parametrize("algo", ["PPO", "PPOLagrangian"])
@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("cls", EXTRACTORS)
def test_trains_in_plain_ppo(task, net, env_id, cls, algo) -> None:
    """The thin usage: MultiInputPolicy with the extractor, under PPO and PPOLagrangian; the
    GNN's weights are trained."""
    from agents import PPOLagrangian

    env = Monitor(make_env(env_id, task, net))
    extra = {"cost_key": "signed_cost"} if algo == "PPOLagrangian" else {}
    model = (PPOLagrangian if extra else PPO)(
        "MultiInputPolicy", env, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu",
        policy_kwargs={"features_extractor_class": cls,
                       "features_extractor_kwargs": dict(SMALL), "net_arch": [32]}, **extra)
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(STEPS)
    assert model.num_timesteps >= STEPS and len(env.get_episode_rewards()) >= 3
    after = list(model.policy.features_extractor.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(before, after))
    if extra:  # the multiplier saw whole episodes
        assert model.lagrange.updates > 0
    obs, _ = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action).astype(env.action_space.dtype))


@pytest.mark.parametrize("cls", EXTRACTORS)
def test_batch_embeds_each_graph_as_alone(task, net, b, cls) -> None:
    """(a) A batch of different observations, of two different networks, embeds exactly as
    each observation alone (GNN-RL's encoder gave every sample the first one's embedding)."""
    task_b, net_b = b
    sizes = common_sizes(net, net_b)
    observations = (rollout(make_env("LayerRatio-v0", task, net, **sizes), 3)
                    + rollout(make_env("LayerRatio-v0", task_b, net_b, **sizes), 4, seed=1))
    env = make_env("LayerRatio-v0", task, net, **sizes)
    extractor = build(cls, env.observation_space)
    with torch.no_grad():
        batch = extractor.embed(as_batch(observations))
        together = extractor(as_batch(observations))
        alone = [extractor.embed(as_batch([o])) for o in observations]
        alone_features = torch.cat([extractor(as_batch([o])) for o in observations])
    assert together.shape == (len(observations), extractor.features_dim)
    torch.testing.assert_close(together, alone_features, atol=1e-5, rtol=1e-5)
    ptr = batch.batch.ptr
    for i, one in enumerate(alone):
        torch.testing.assert_close(batch.nodes[ptr[i]:ptr[i + 1]], one.nodes, atol=1e-5,
                                   rtol=1e-5)
    # the observations really differ, so equal rows could not come from a broadcast first row
    assert len({tuple(row.round(decimals=4).tolist()) for row in together}) == len(observations)


def _padded_action(action, space: spaces.Space):
    if isinstance(space, spaces.Box) and space.shape != np.shape(action):
        out = np.zeros(space.shape, dtype=space.dtype)
        out[: len(action)] = action
        return out
    return action


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("cls", EXTRACTORS)
def test_padding_never_changes_features(task, net, env_id, cls) -> None:
    """(b) The same network observed with larger max_nodes/max_edges/max_groups gives the
    same features, step after step."""
    exact = make_env(env_id, task, net)
    padded = make_env(env_id, task, net, max_nodes=net.topology.num_nodes + 7,
                      max_edges=net.topology.num_edges + 11, max_groups=len(net.groups) + 4)
    assert padded.observation_space["node_features"].shape[0] > \
        exact.observation_space["node_features"].shape[0]
    extractor = build(cls, exact.observation_space)
    wide = build(cls, padded.observation_space)
    assert wide.features_dim == extractor.features_dim
    exact.action_space.seed(3)
    obs_a, _ = exact.reset(seed=3)
    obs_b, _ = padded.reset(seed=3)
    for _ in range(len(net.groups)):
        with torch.no_grad():
            torch.testing.assert_close(extractor(as_batch([obs_b])), extractor(as_batch([obs_a])),
                                       atol=1e-6, rtol=1e-6)
        action = exact.action_space.sample()
        if isinstance(exact.action_space, spaces.Box):
            action = np.full(exact.action_space.shape, -0.3, dtype=np.float32)
        obs_a, _, done, trunc, _ = exact.step(action)
        obs_b, *_ = padded.step(_padded_action(action, padded.action_space))
        if done or trunc:
            break


@pytest.mark.parametrize("cls", EXTRACTORS)
def test_edge_types_reach_the_embedding(task, b, cls) -> None:
    """Edge features enter the messages: relabelling the residual edges as plain ones
    changes the node embeddings."""
    task_b, net_b = b
    obs, _ = make_env("DNNGraph-v0", task_b, net_b).reset(seed=0)
    assert (obs["edge_type"] == 1).any()
    plain = {**obs, "edge_type": np.zeros_like(obs["edge_type"])}
    extractor = build(cls, make_env("DNNGraph-v0", task_b, net_b).observation_space)
    with torch.no_grad():
        one, other = extractor.embed(as_batch([obs])), extractor.embed(as_batch([plain]))
    assert not torch.allclose(one.nodes, other.nodes, atol=1e-4)


def test_multistage_stage_one_stays_inside_blocks(b) -> None:
    """m-GNN: stage 1 sees only a node's own block, stage 2 the whole network. Changing the
    features of one block's nodes leaves the stage-1 half of every other block unchanged
    and changes their stage-2 half."""
    task_b, net_b = b
    env = make_env("DNNGraph-v0", task_b, net_b)
    obs, _ = env.reset(seed=0)
    blocks = obs["block"][obs["node_mask"] > 0]
    assert len(set(blocks.tolist()) - {-1}) >= 3
    changed = obs["node_features"].copy()
    changed[obs["block"] == 0] = np.clip(changed[obs["block"] == 0] + 0.3, 0.0, 1.0)
    extractor = build(MultiStageGNNExtractor, env.observation_space)
    with torch.no_grad():
        one = extractor.embed(as_batch([obs])).nodes
        two = extractor.embed(as_batch([{**obs, "node_features": changed}])).nodes
    h = SMALL["hidden"]
    other = torch.as_tensor(blocks != 0)
    torch.testing.assert_close(one[other, :h], two[other, :h])
    assert not torch.allclose(one[other, h:], two[other, h:], atol=1e-5)
    near = torch.as_tensor(blocks == 0)
    assert not torch.allclose(one[near, :h], two[near, :h], atol=1e-5)


@pytest.mark.parametrize("cls", EXTRACTORS)
def test_channel_keys_reach_the_features(task, net, cls) -> None:
    """ChannelMask-v0's per-channel arrays are in the features, real channels only."""
    env = make_env("ChannelMask-v0", task, net)
    obs, _ = env.reset(seed=0)
    extractor = build(cls, env.observation_space)
    real = np.flatnonzero(obs["channel_mask"])
    padded = np.flatnonzero(obs["channel_mask"] == 0)
    assert len(real) and len(padded)
    with torch.no_grad():
        base = extractor(as_batch([obs]))
        feats = obs["channel_features"].copy()
        feats[padded] = 0.9
        same = extractor(as_batch([{**obs, "channel_features": feats}]))
        feats[real[0]] = 1.0 - feats[real[0]]
        other = extractor(as_batch([{**obs, "channel_features": feats}]))
    torch.testing.assert_close(base, same)
    assert not torch.allclose(base, other)


@pytest.mark.parametrize("cls", EXTRACTORS)
def test_features_dim_comes_from_the_space_not_a_sample(task, net, cls) -> None:
    env = make_env("ChannelMask-v0", task, net)
    space = env.observation_space

    def refuse(*args, **kwargs):
        raise AssertionError("the extractor sampled its observation space")

    space.sample = refuse
    extractor = build(cls, space)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        assert extractor(as_batch([obs, obs])).shape == (2, extractor.features_dim)


@pytest.mark.parametrize("cls", EXTRACTORS)
def test_non_graph_spaces_are_rejected(task, net, cls) -> None:
    graph_space = make_env("DNNGraph-v0", task, net, obs_mode="graph").observation_space
    partial = spaces.Dict({"node_features": spaces.Box(0, 1, (3, 2))})
    for bad in (spaces.Box(-1.0, 1.0, (4,)), partial, graph_space):
        with pytest.raises(InvalidArgumentError, match="observation_space"):
            cls(bad)
    ok = make_env("DNNGraph-v0", task, net).observation_space
    with pytest.raises(InvalidArgumentError, match="hidden"):
        cls(ok, hidden=0)
    with pytest.raises(InvalidArgumentError, match="observation_space"):
        PPO("MultiInputPolicy", gym.make("CartPole-v1"),
            policy_kwargs={"features_extractor_class": cls})
