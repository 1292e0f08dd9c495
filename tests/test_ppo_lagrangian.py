"""PPOLagrangian and MaskablePPOLagrangian: cost buffers, constraint satisfaction on a toy
CMDP (against plain PPO), the real environments, save/load, and bad input."""

from __future__ import annotations

import csv

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor

from agents.common.buffers import (
    CostDictRolloutBuffer,
    CostRolloutBuffer,
    MaskableCostDictRolloutBuffer,
    MaskableCostRolloutBuffer,
)
from agents.ppo_lagrangian import MaskablePPOLagrangian, PPOLagrangian
from agents.ppo_lagrangian.cost_critic import lagrangian_advantage
from prune_gym.errors import InvalidArgumentError, PruneGymError


class RiskyChoices(gym.Env):
    """A toy CMDP whose reward pays for violating: three steps, each either safe (reward 0)
    or risky (reward 1); the episode's cost, paid on its last step as in prune-gym, is the
    number of risky steps. A limit of 0.3 allows on average one risky step in ~3 episodes."""

    STEPS = 3

    def __init__(self, cost_key: str = "cost"):
        self.observation_space = spaces.Box(0.0, 1.0, (self.STEPS,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.cost_key = cost_key

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.STEPS, np.float32)
        obs[min(self.t, self.STEPS - 1)] = 1.0
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.risky = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.risky += int(action)
        self.t += 1
        done = self.t == self.STEPS
        info = {self.cost_key: float(self.risky) if done else 0.0}
        return self._obs(), float(action), done, False, info


LIMIT = 0.3
TOY = {"n_steps": 96, "batch_size": 48, "n_epochs": 4, "ent_coef": 0.01, "seed": 0,
       "device": "cpu"}
TOY_STEPS = 2500


def greedy_episode_cost(model) -> float:
    env = RiskyChoices()
    obs, _ = env.reset()
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, _, info = env.step(int(action))
        total += info["cost"]
    return total


# -- buffers -----------------------------------------------------------------------------------
BOX = spaces.Box(-1.0, 1.0, (2,), np.float32)
DICT = spaces.Dict({"a": BOX, "b": spaces.Box(0, 5, (3,), np.int16)})


@pytest.mark.parametrize("buffer_cls, obs_space, action_space", [
    (CostRolloutBuffer, BOX, spaces.Discrete(3)),
    (CostDictRolloutBuffer, DICT, BOX),
    (MaskableCostRolloutBuffer, BOX, spaces.MultiBinary(4)),
    (MaskableCostDictRolloutBuffer, DICT, spaces.Discrete(3)),
])
def test_cost_gae_equals_sb3_gae_and_minibatches_stay_aligned(buffer_cls, obs_space,
                                                              action_space) -> None:
    rng = np.random.default_rng(0)
    steps, envs = 7, 3
    buf = buffer_cls(steps, obs_space, action_space, device="cpu", gamma=0.9, gae_lambda=0.8,
                     n_envs=envs, cost_gae_lambda=0.8)
    for _ in range(steps):
        obs = ({k: np.stack([s.sample() for _ in range(envs)]) for k, s in obs_space.items()}
               if isinstance(obs_space, spaces.Dict) else rng.normal(size=(envs, 2)))
        buf.add(obs, np.stack([action_space.sample() for _ in range(envs)]),
                rng.normal(size=envs), rng.random(envs) < 0.3, th.as_tensor(rng.normal(size=envs)),
                th.as_tensor(rng.normal(size=envs)))
    buf.costs[:] = buf.rewards
    buf.cost_values[:] = buf.values
    last, dones = th.as_tensor(rng.normal(size=envs)), rng.random(envs) < 0.5
    buf.compute_returns_and_advantage(last, dones)  # SB3's own
    buf.compute_cost_returns_and_advantage(last.numpy(), dones)
    np.testing.assert_allclose(buf.cost_advantages, buf.advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(buf.cost_returns, buf.returns, rtol=1e-5, atol=1e-6)
    assert np.abs(buf.advantages).sum() > 0
    seen = 0
    for data in buf.get(batch_size=5):
        th.testing.assert_close(data.cost_advantages, data.advantages)
        th.testing.assert_close(data.cost_returns, data.returns)
        th.testing.assert_close(data.old_cost_values, data.old_values)
        seen += len(data.advantages)
    assert seen == steps * envs
    # a different cost lambda gives different cost advantages (the argument is used)
    other = buffer_cls(steps, obs_space, action_space, device="cpu", gamma=0.9, gae_lambda=0.8,
                       n_envs=envs, cost_gae_lambda=0.2)
    other.costs[:], other.cost_values[:] = buf.rewards.reshape(steps, envs), 0.0
    other.compute_cost_returns_and_advantage(last.numpy(), dones)
    assert not np.allclose(other.cost_advantages, buf.rewards.reshape(steps, envs))


def test_cost_buffer_rejects_a_bad_cost_lambda() -> None:
    with pytest.raises(InvalidArgumentError, match="cost_gae_lambda"):
        CostRolloutBuffer(4, BOX, BOX, cost_gae_lambda=1.5)


def test_lagrangian_advantage_by_hand() -> None:
    a_r, a_c = th.tensor([1.0, 3.0]), th.tensor([0.5, -0.5])
    got = lagrangian_advantage(a_r, a_c, 3.0, reward_mean=2.0, reward_std=1.0, cost_mean=0.25)
    # A_r standardised: [-1, 1]; A_c centred: [0.25, -0.75]; (A_r - 3 A_c) / 4
    th.testing.assert_close(got, th.tensor([(-1 - 0.75) / 4, (1 + 2.25) / 4]))
    raw = lagrangian_advantage(a_r, a_c, 0.0, reward_mean=2.0, reward_std=None, cost_mean=0.0)
    th.testing.assert_close(raw, a_r)  # lambda 0 and no standardisation: plain A_r
    both = lagrangian_advantage(a_r, a_c, 1.0, reward_mean=2.0, reward_std=1.0,
                                cost_mean=0.25, cost_std=0.5)
    # A_c scaled too: [0.5, -1.5]; (A_r - A_c) / 2
    th.testing.assert_close(both, th.tensor([(-1 - 0.5) / 2, (1 + 1.5) / 2]))


def test_cost_head_reads_the_critic_latent() -> None:
    model = PPOLagrangian("MlpPolicy", RiskyChoices(), n_steps=16, batch_size=16, device="cpu",
                          policy_kwargs={"net_arch": {"pi": [8], "vf": [16, 16]}})
    policy = model.policy
    assert policy.cost_value_net.in_features == 16
    assert any(p is policy.cost_value_net.weight
               for group in policy.optimizer.param_groups for p in group["params"])
    obs = th.as_tensor(np.eye(3, dtype=np.float32))
    with th.no_grad():
        latent = policy.mlp_extractor.forward_critic(policy.extract_features(obs))
        th.testing.assert_close(model._cost_values(obs),
                                policy.cost_value_net(latent).flatten())


def test_with_lambda_held_at_zero_it_is_plain_ppo() -> None:
    """lambda 0 (and no cost-value loss): the same update as SB3's PPO, parameter for
    parameter, when a rollout is one minibatch (SB3 standardises per minibatch, we per
    rollout)."""
    kwargs = {"n_steps": 48, "batch_size": 48, "n_epochs": 3, "seed": 3, "device": "cpu"}
    ppo = PPO("MlpPolicy", RiskyChoices(), **kwargs)
    ppo.learn(144)  # (seeding is at construction: each is built just before it learns)
    ours = PPOLagrangian("MlpPolicy", RiskyChoices(), cost_vf_coef=0.0,
                         lagrangian_kwargs={"lambda_init": 0.0, "lr": 0.0}, **kwargs)
    ours.learn(144)
    np.testing.assert_array_equal(ours.rollout_buffer.actions, ppo.rollout_buffer.actions)
    assert ours.lagrange_multiplier == 0.0 and ours.lagrange.updates == 3
    theirs = ppo.policy.state_dict()
    for name, value in ours.policy.state_dict().items():
        if not name.startswith("cost_value_net"):
            th.testing.assert_close(value, theirs[name], rtol=1e-5, atol=1e-6, msg=name)


# -- the toy CMDP: the constraint is met, plain PPO's is not ---------------------------------
@pytest.fixture(scope="module")
def plain_ppo():
    model = PPO("MlpPolicy", Monitor(RiskyChoices()), **TOY)
    model.learn(TOY_STEPS)
    return model


@pytest.mark.parametrize("rule, kwargs", [
    # faster than OmniSafe's defaults, which are tuned for runs of 10^6-10^7 steps
    ("gradient", {"lr": 0.2}),
    ("pid", {"kp": 1.0, "ki": 0.1, "kd": 0.0}),
])
def test_toy_cmdp_constraint_met_where_plain_ppo_violates(plain_ppo, rule, kwargs) -> None:
    model = PPOLagrangian("MlpPolicy", RiskyChoices(), cost_limit=LIMIT, lagrangian=rule,
                          lagrangian_kwargs=kwargs, **TOY)
    model.learn(TOY_STEPS)
    plain_returns = [ep["r"] for ep in plain_ppo.ep_info_buffer]
    assert np.mean(plain_returns[-20:]) > 2.5  # plain PPO takes every risk ...
    assert greedy_episode_cost(plain_ppo) == 3.0  # ... so its episode cost is 3 > 0.3
    assert model.lagrange.updates >= TOY_STEPS // TOY["n_steps"] - 1
    assert model.lagrange_multiplier > 1.0  # it rose from 0.001
    assert greedy_episode_cost(model) <= LIMIT
    last = list(model.ep_cost_buffer)[-20:]
    assert np.mean(last) <= 2 * LIMIT  # the stochastic policy too, near the limit


def test_multiplier_falls_when_the_agent_is_too_cautious() -> None:
    """Started with a large lambda, the agent first takes no risk; lambda then falls and the
    agent ends near the limit rather than far under it."""
    seen: list[float] = []

    class Record(PPOLagrangian):
        def _update_lagrange(self, episode_costs):
            super()._update_lagrange(episode_costs)
            seen.append(self.lagrange_multiplier)

    model = Record("MlpPolicy", RiskyChoices(), cost_limit=2.0,
                   lagrangian_kwargs={"lambda_init": 5.0, "lr": 0.2}, **TOY)
    model.learn(TOY_STEPS)
    assert min(seen) < 5.0 - 1.0
    assert np.mean(list(model.ep_cost_buffer)[-20:]) > 1.0


def test_time_limit_truncation_bootstraps_the_cost_value() -> None:
    """An episode cut by a time limit owes the cost still to come: as SB3 does for the
    reward, the step is credited gamma * (cost value of the terminal observation)."""
    seen = {}

    class Snapshot(PPOLagrangian):
        def train(self):  # before any update: the parameters that collected the rollout
            terminal = th.tensor([[0.0, 0.0, 1.0]])
            with th.no_grad():
                seen["bootstrap"] = self.gamma * float(self._cost_values(terminal)[0])
            seen["costs"] = self.rollout_buffer.costs.copy()
            super().train()

    env = gym.wrappers.TimeLimit(RiskyChoices(), max_episode_steps=2)  # cut before the cost
    model = Snapshot("MlpPolicy", env, n_steps=8, batch_size=8, device="cpu", seed=0)
    model.learn(8)
    costs = seen["costs"].reshape(-1)
    np.testing.assert_allclose(costs[1::2], seen["bootstrap"], rtol=1e-5)
    assert seen["bootstrap"] != 0.0 and np.all(costs[0::2] == 0.0)
    assert list(model.ep_cost_buffer) == [0.0] * 4  # what the episodes reported


def test_env_without_the_cost_key_is_named() -> None:
    model = PPOLagrangian("MlpPolicy", RiskyChoices(cost_key="penalty"), cost_key="cost",
                          n_steps=16, batch_size=16, device="cpu")
    with pytest.raises(PruneGymError, match=r"cost_key='cost'.*'penalty'"):
        model.learn(16)


# -- the real environments -------------------------------------------------------------------
SMALL = {"net_arch": [32, 32]}
REAL = {"n_steps": 32, "batch_size": 32, "n_epochs": 2, "seed": 0, "device": "cpu"}


def learn_logged(model, steps: int, tmp_path) -> list[dict[str, str]]:
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(steps)
    with open(tmp_path / "progress.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("env_id, rule", [("LayerRatio-v0", "pid"), ("DNNGraph-v0", "gradient")])
def test_ppo_lagrangian_on_prune_gym(make, env_id, rule, tmp_path) -> None:
    env = Monitor(make(env_id, eval_samples=100))
    model = PPOLagrangian("MultiInputPolicy", env, cost_key="signed_cost", lagrangian=rule,
                          policy_kwargs={"net_arch": [32, 32]}, **REAL)
    rows = learn_logged(model, 256, tmp_path)
    assert model.num_timesteps >= 256 and model.lagrange.updates >= 1
    last = rows[-1]
    for key in ("rollout/ep_cost_mean", "train/lagrange_multiplier", "train/cost_value_loss"):
        assert np.isfinite(float(last[key])), key
    assert model.lagrange_multiplier != 0.001  # it moved from its initial value
    # signed costs are the env's own margins, negative when the network ends under budget
    assert min(model.ep_cost_buffer) >= -1.0 and len(model.ep_cost_buffer) >= 8


def test_maskable_ppo_lagrangian_on_channel_mask(make, tmp_path) -> None:
    env = Monitor(make("ChannelMask-v0", eval_samples=100))
    model = MaskablePPOLagrangian("MultiInputPolicy", env, cost_key="signed_cost",
                                  lagrangian="pid", policy_kwargs=dict(SMALL), **REAL)
    rows = learn_logged(model, 128, tmp_path)
    assert isinstance(model, MaskablePPO) and model.lagrange.updates >= 1
    assert np.isfinite(float(rows[-1]["train/cost_value_loss"]))
    base = env.unwrapped
    obs, _ = env.reset()
    for size in (g.size for g in base.net.groups):
        action, _ = model.predict(obs, action_masks=base.action_masks())
        assert not action[size:].any()  # masked (padded) channels are never kept
        obs, *_ = env.step(action)


def test_ppo_lagrangian_on_network_b_long_episodes() -> None:
    """digits-resnet-v1 (12 groups, residual blocks): 12-step episodes whose cost arrives
    on the last step, so the cost advantage of early steps comes from GAE and the critic."""
    env = Monitor(gym.make("LayerRatio-v0", model="digits-resnet-v1", eval_samples=100))
    model = PPOLagrangian("MultiInputPolicy", env, cost_key="signed_cost", lagrangian="pid",
                          policy_kwargs=dict(SMALL), **{**REAL, "n_steps": 48, "batch_size": 48})
    model.learn(240)
    assert model.lagrange.updates == 5 and len(model.ep_cost_buffer) == 20
    buf = model.rollout_buffer
    steps_of_episode = np.arange(48) % 12
    first = buf.cost_advantages.reshape(-1)[steps_of_episode == 0]
    assert np.all(buf.costs.reshape(-1)[steps_of_episode < 11] == 0.0)  # paid at the end ...
    assert np.abs(first).max() > 1e-3  # ... yet the first step has a cost advantage


def test_ppo_lagrangian_with_graph_policy(make) -> None:
    pytest.importorskip("torch_geometric")
    from agents.common import policies  # noqa: F401 - registers the "GraphPolicy" alias

    env = make("DNNGraph-v0", eval_samples=100)
    model = PPOLagrangian("GraphPolicy", env, cost_key="signed_cost", **REAL)
    assert type(model.policy).__name__ == "GraphPolicy"
    assert hasattr(model.policy, "cost_value_net")
    model.learn(64)
    assert model.lagrange.updates >= 1 and np.abs(model.rollout_buffer.cost_returns).sum() > 0


# -- save and load -----------------------------------------------------------------------------
@pytest.mark.parametrize("algo, env_id, rule", [
    (PPOLagrangian, "LayerRatio-v0", "pid"),
    (MaskablePPOLagrangian, "ChannelMask-v0", "gradient"),
])
def test_save_load_predicts_the_same_with_the_same_multiplier(make, tmp_path, algo, env_id,
                                                              rule) -> None:
    env = make(env_id, eval_samples=100)
    model = algo("MultiInputPolicy", env, cost_key="signed_cost", cost_limit=0.0,
                 lagrangian=rule, lagrangian_kwargs={"lambda_init": 0.2},
                 policy_kwargs=dict(SMALL), **REAL)
    model.learn(96)
    assert model.lagrange.updates >= 1
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=env, device="cpu")
    assert loaded.lagrange_multiplier == model.lagrange_multiplier
    assert loaded.lagrange.state_dict() == model.lagrange.state_dict()  # PID / Adam state too
    assert (loaded.cost_key, loaded.lagrangian) == ("signed_cost", rule)
    masked = algo is MaskablePPOLagrangian
    obs, _ = env.reset(seed=1)
    done = False
    while not done:
        kwargs = {"action_masks": env.unwrapped.action_masks()} if masked else {}
        a, _ = model.predict(obs, deterministic=True, **kwargs)
        b, _ = loaded.predict(obs, deterministic=True, **kwargs)
        np.testing.assert_array_equal(a, b)
        tensor = model.policy.obs_to_tensor(obs)[0]
        with th.no_grad():
            assert th.equal(model._cost_values(tensor), loaded._cost_values(tensor))
        obs, _, terminated, truncated, _ = env.step(a)
        done = terminated or truncated
    loaded.learn(64)  # and it trains on
    assert loaded.lagrange.updates > model.lagrange.updates


def test_load_with_a_new_limit_keeps_the_multiplier_state(tmp_path) -> None:
    model = PPOLagrangian("MlpPolicy", RiskyChoices(), lagrangian="pid", cost_limit=0.3,
                          n_steps=24, batch_size=24, device="cpu", seed=0)
    model.learn(48)
    model.save(tmp_path / "toy")
    loaded = PPOLagrangian.load(tmp_path / "toy", env=RiskyChoices(), cost_limit=1.0)
    assert loaded.cost_limit == loaded.lagrange.cost_limit == 1.0
    state, saved = loaded.lagrange.state_dict(), model.lagrange.state_dict()
    assert state["integral"] == saved["integral"] and state["lambda"] == saved["lambda"]
    with pytest.raises(InvalidArgumentError, match="cost_limit"):
        PPOLagrangian.load(tmp_path / "toy", env=RiskyChoices(), cost_limit=-1.0)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, name", [
    ({"cost_limit": -1.0}, "cost_limit"),
    ({"lagrangian": "lbfgs"}, "rule"),
    ({"lagrangian": "pid", "lagrangian_kwargs": {"kp": -0.5}}, "kp"),
    ({"lagrangian_kwargs": {"lr": -0.5}}, "lr"),
    ({"lagrangian_kwargs": {"ki": 0.5}}, "ki"),
    ({"lagrangian_kwargs": [("lr", 0.1)]}, "lagrangian_kwargs"),
    ({"cost_gae_lambda": 1.5}, "cost_gae_lambda"),
    ({"cost_vf_coef": -0.1}, "cost_vf_coef"),
    ({"cost_vf_coef": float("nan")}, "cost_vf_coef"),
    ({"cost_key": ""}, "cost_key"),
    ({"normalize_cost_advantage": "yes"}, "normalize_cost_advantage"),
    ({"rollout_buffer_class": RolloutBuffer}, "rollout_buffer_class"),
])
def test_bad_arguments(kwargs, name) -> None:
    with pytest.raises(InvalidArgumentError, match=name):
        PPOLagrangian("MlpPolicy", RiskyChoices(), device="cpu", **kwargs)


def test_the_users_dicts_are_not_modified() -> None:
    lagrangian_kwargs = {"lr": 0.1}
    buffer_kwargs: dict = {}
    model = PPOLagrangian("MlpPolicy", RiskyChoices(), lagrangian_kwargs=lagrangian_kwargs,
                          rollout_buffer_kwargs=buffer_kwargs, n_steps=16, batch_size=16,
                          device="cpu")
    model.learn(32)
    assert lagrangian_kwargs == {"lr": 0.1} and buffer_kwargs == {}
