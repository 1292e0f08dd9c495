"""GraphPolicy: per-node heads that train with PPO on every env, mask padded action
dimensions exactly, ignore observation padding, survive save/load, and let a policy trained
on one network act on another."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import FlattenExtractor

from agents.common.policies import GraphPolicy
from agents.common.torch_layers import GATExtractor, MultiStageGNNExtractor
from prune_gym import ENV_IDS
from prune_gym.errors import InvalidArgumentError
from tests.graph_envs import as_batch, common_sizes, make_env, network_b, rollout

STEPS = 256
SMALL = {"features_extractor_kwargs": {"hidden": 16}, "net_arch": [32], "head_hidden": 16}
HEADS = {"LayerRatio-v0": "current", "DNNGraph-v0": "group", "ChannelMask-v0": "channel"}


@pytest.fixture(scope="module")
def b():
    return network_b()


def ppo(env, **policy_kwargs) -> PPO:
    return PPO(GraphPolicy, env, n_steps=64, batch_size=64, n_epochs=2, seed=0,
               device="cpu", policy_kwargs={**SMALL, **policy_kwargs})


def distribution(policy: GraphPolicy, observations: list[dict]):
    with torch.no_grad():
        return policy.get_distribution(as_batch(observations))


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("cls", [GATExtractor, MultiStageGNNExtractor])
def test_trains_with_ppo(task, net, env_id, cls) -> None:
    env = Monitor(make_env(env_id, task, net))
    model = ppo(env, features_extractor_class=cls)
    assert isinstance(model.policy, GraphPolicy) and model.policy.action_head == HEADS[env_id]
    head = [p.detach().clone() for p in model.policy.action_net.parameters()]
    model.learn(STEPS)
    assert model.num_timesteps >= STEPS and len(env.get_episode_rewards()) >= 3
    assert any(not torch.equal(x, y) for x, y in zip(head, model.policy.action_net.parameters()))
    obs, _ = env.reset()
    action, _ = model.predict(obs)
    assert env.action_space.contains(np.asarray(action).astype(env.action_space.dtype))


def test_padded_channels_add_nothing(task, net) -> None:
    """ChannelMask-v0: padded channels are never sampled, and contribute exactly zero
    log-probability and zero entropy, whatever bit the action holds there."""
    env = make_env("ChannelMask-v0", task, net, max_channels=96)
    observations = rollout(env, 3)
    policy = ppo(env).policy
    dist = distribution(policy, observations)
    mask = as_batch(observations)["channel_mask"] > 0.5
    assert (~mask).sum() > 0 and mask.sum() > 0
    samples = torch.stack([dist.sample() for _ in range(200)])
    assert not samples[:, ~mask].any()
    assert 0.2 < samples[:, mask].float().mean() < 0.8  # the real bits do vary
    probs = dist.distribution.probs
    by_hand = -(probs * probs.log() + (1 - probs) * (1 - probs).log())
    torch.testing.assert_close(dist.entropy(), (by_hand * mask).sum(1))
    action = samples[0]
    flipped = action.clone()
    flipped[~mask] = 1.0
    torch.testing.assert_close(dist.log_prob(flipped), dist.log_prob(action))
    real_only = torch.distributions.Bernoulli(probs=probs).log_prob(action) * mask
    torch.testing.assert_close(dist.log_prob(action), real_only.sum(1))
    _, log_prob, entropy = policy.evaluate_actions(as_batch(observations), flipped)
    torch.testing.assert_close(log_prob, dist.log_prob(action), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, dist.entropy(), atol=1e-5, rtol=1e-5)


def test_padded_groups_add_nothing(task, net) -> None:
    """DNNGraph-v0 with max_groups beyond the network: padded dims are 0 and carry no
    log-probability or entropy."""
    real = len(net.groups)
    env = make_env("DNNGraph-v0", task, net, max_groups=real + 5)
    observations = rollout(env, 2)
    dist = distribution(ppo(env).policy, observations)
    actions = dist.sample()
    assert not actions[:, real:].any() and actions[:, :real].abs().min() > 0
    moved = actions.clone()
    moved[:, real:] = 0.7
    torch.testing.assert_close(dist.log_prob(moved), dist.log_prob(actions))
    per_dim = dist.distribution.entropy()
    torch.testing.assert_close(dist.entropy(), per_dim[:, :real].sum(1))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_padding_never_changes_the_distribution(task, net, env_id) -> None:
    """(b) The same network observed with larger max_nodes/max_edges/max_groups gets the
    same action distribution on its real dimensions (same weights, two spaces)."""
    exact = make_env(env_id, task, net)
    padded = make_env(env_id, task, net, max_nodes=net.topology.num_nodes + 9,
                      max_edges=net.topology.num_edges + 5, max_groups=len(net.groups) + 3)
    # PyTorch's default init, not SB3's orthogonal one with gain 0.01 on the head: larger
    # outputs, so that a difference would show
    small, wide = ppo(exact, ortho_init=False).policy, ppo(padded, ortho_init=False).policy
    wide.load_state_dict(small.state_dict())
    obs_exact, obs_padded = rollout(exact, 3), rollout(padded, 3)
    d1, d2 = distribution(small, obs_exact), distribution(wide, obs_padded)
    dims = exact.action_space.shape[0]
    if env_id == "ChannelMask-v0":
        torch.testing.assert_close(d2.distribution.logits, d1.distribution.logits)
    else:
        torch.testing.assert_close(d2.distribution.mean[:, :dims], d1.distribution.mean)
        torch.testing.assert_close(d2.entropy(), d1.entropy())
    with torch.no_grad():
        torch.testing.assert_close(wide.predict_values(as_batch(obs_padded)),
                                   small.predict_values(as_batch(obs_exact)))


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_save_load_predict(task, net, env_id, tmp_path) -> None:
    env = make_env(env_id, task, net)
    model = ppo(env)
    model.learn(64)
    model.save(tmp_path / "graph_policy")
    loaded = PPO.load(tmp_path / "graph_policy", env=env, device="cpu")
    assert isinstance(loaded.policy, GraphPolicy)
    assert loaded.policy.action_head == model.policy.action_head
    for obs in rollout(env, 4, seed=5):
        a1, _ = model.predict(obs, deterministic=True)
        a2, _ = loaded.predict(obs, deterministic=True)
        np.testing.assert_array_equal(a1, a2)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_train_on_a_act_on_b(task, net, b, env_id) -> None:
    """One policy for any network: trained on the digits CNN (3 groups), it acts on the
    digits ResNet (residual blocks, more groups) through the same spaces, for a whole
    episode, with valid actions that leave B's padded dimensions alone."""
    task_b, net_b = b
    sizes = common_sizes(net, net_b, channels=env_id == "ChannelMask-v0")
    env_a = Monitor(make_env(env_id, task, net, **sizes))
    env_b = make_env(env_id, task_b, net_b, **sizes)
    assert env_a.observation_space == env_b.observation_space
    assert env_a.action_space == env_b.action_space
    model = ppo(env_a)
    model.learn(STEPS)
    assert len(env_a.get_episode_rewards()) >= 3
    obs, _ = env_b.reset(seed=0)
    steps, done = 0, False
    while not done:
        action, _ = model.predict(obs)
        assert env_b.action_space.contains(np.asarray(action).astype(env_b.action_space.dtype))
        if env_id == "DNNGraph-v0":
            assert not np.asarray(action)[len(net_b.groups):].any()
        if env_id == "ChannelMask-v0":
            assert not np.asarray(action)[obs["channel_mask"] == 0].any()
        obs, reward, terminated, truncated, info = env_b.step(action)
        steps, done = steps + 1, terminated or truncated
    assert np.isfinite(reward) and "accuracy" in info
    if env_id != "DNNGraph-v0":
        assert steps == len(net_b.groups)
    model.set_env(Monitor(env_b))  # the same spaces: training can go on on network B
    model.learn(64, reset_num_timesteps=False)


def test_bad_inputs(task, net) -> None:
    with pytest.raises(InvalidArgumentError, match="observation space"):
        PPO(GraphPolicy, gym.make("CartPole-v1"))
    with pytest.raises(InvalidArgumentError, match="obs_mode"):
        GraphPolicy(make_env("DNNGraph-v0", task, net, obs_mode="graph").observation_space,
                    spaces.Box(-1, 1, (3,)), lambda _: 1e-3)
    env = make_env("DNNGraph-v0", task, net)
    space = env.observation_space
    with pytest.raises(InvalidArgumentError, match="action_space"):
        GraphPolicy(space, spaces.Discrete(3), lambda _: 1e-3)
    with pytest.raises(InvalidArgumentError, match="group"):
        GraphPolicy(spaces.Dict({k: v for k, v in space.spaces.items() if k != "group"}),
                    env.action_space, lambda _: 1e-3)
    with pytest.raises(InvalidArgumentError, match="action_head"):
        ppo(env, action_head="channels")
    with pytest.raises(InvalidArgumentError, match="features_extractor_class"):
        ppo(env, features_extractor_class=FlattenExtractor)
    with pytest.raises(InvalidArgumentError, match="use_sde"):
        PPO(GraphPolicy, env, use_sde=True, device="cpu")


@pytest.mark.parametrize("shared", [True, False])
def test_sb3_value_path_is_intact(task, net, shared) -> None:
    """Critics added on SB3's critic latent (PPOLagrangian's cost critic) see what the value
    head sees: extract_features -> mlp_extractor.forward_critic -> value_net."""
    env = make_env("ChannelMask-v0", task, net)
    model = ppo(env, share_features_extractor=shared)
    model.learn(64)
    policy = model.policy
    batch = as_batch(rollout(env, 3))
    with torch.no_grad():
        _, values, _ = policy(batch)
        features = policy.extract_features(batch)
        critic = features if shared else features[1]
        by_hand = policy.value_net(policy.mlp_extractor.forward_critic(critic))
        torch.testing.assert_close(values, by_hand)
        torch.testing.assert_close(policy.predict_values(batch), by_hand)


def test_policy_aliases_are_the_algorithms_own(task, net) -> None:
    """"GraphPolicy" is declared on the project's algorithm classes (SB3's policy_aliases),
    not patched into SB3's."""
    from agents import MaskablePPOLagrangian, PPOLagrangian
    from agents.common.policies import MaskableGraphPolicy

    assert PPOLagrangian.policy_aliases["GraphPolicy"] is GraphPolicy
    assert MaskablePPOLagrangian.policy_aliases["GraphPolicy"] is MaskableGraphPolicy
    assert "GraphPolicy" not in PPO.policy_aliases


def test_maskable_graph_policy_honours_action_masks(task, net) -> None:
    """MaskablePPOLagrangian("GraphPolicy", ChannelMask-v0) trains, and a bit its action
    mask forbids is never set (one it forces is always set), sampled or deterministic."""
    from agents import MaskablePPOLagrangian
    from agents.common.policies import MaskableGraphPolicy

    env = Monitor(make_env("ChannelMask-v0", task, net))
    model = MaskablePPOLagrangian("GraphPolicy", env, n_steps=32, batch_size=32, n_epochs=1,
                                  seed=0, device="cpu", cost_key="signed_cost",
                                  policy_kwargs=SMALL)
    assert isinstance(model.policy, MaskableGraphPolicy)
    model.learn(32)
    obs, _ = env.reset(seed=0)
    masks = env.unwrapped.action_masks().reshape(-1, 2)
    real = int(masks[:, 1].sum())  # the current group's channels may be 0 or 1
    assert real >= 2
    masks[0, 1] = False  # channel 0 may not be kept
    masks[1, 0] = False  # channel 1 may not be dropped
    flat = masks.reshape(-1)
    with torch.no_grad():
        dist = model.policy.get_distribution(as_batch([obs]), action_masks=flat[None])
        samples = torch.stack([dist.sample()[0] for _ in range(50)])
    assert (samples[:, 0] == 0).all() and (samples[:, 1] == 1).all()
    assert not samples[:, real:].any()  # padding is never set
    for deterministic in (True, False):
        action, _ = model.predict(obs, deterministic=deterministic, action_masks=flat)
        assert action[0] == 0 and action[1] == 1
    forced = samples[0].clone()
    with torch.no_grad():  # the forced bits cost nothing; a forbidden one is impossible
        allowed = dist.log_prob(forced[None])
        forced[0] = 1
        assert dist.log_prob(forced[None]) < allowed - 1e6
