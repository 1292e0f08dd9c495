"""The second embedded task, digits-resnet-v1: its recipe trains and caches; it prunes
(>= 10 groups) and runs envs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from prune_gym import PrunableNetwork
from prune_gym.errors import InvalidArgumentError
from prune_gym.models import DigitsResNet, get_model
from prune_gym.tasks import Task, list_tasks, make_task
from prune_gym.verify import measure

NAME = "digits-resnet-v1"


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("prune_gym_cache"))


@pytest.fixture(scope="module")
def trained(cache) -> Task:
    """The network trained here by the task's recipe (``train=True``), not the shipped one."""
    return make_task(NAME, cache_dir=cache, train=True)


@pytest.fixture(scope="module")
def task() -> Task:
    return make_task(NAME)


@pytest.fixture(scope="module")
def net(task) -> PrunableNetwork:
    return PrunableNetwork(task.model, task.example_inputs)


def test_listed_and_registered_as_a_model() -> None:
    assert NAME in list_tasks()
    assert isinstance(get_model("digits_resnet"), DigitsResNet)


def test_trains_to_95_percent_and_caches(trained, cache) -> None:
    task = trained
    assert task.name == NAME and task.version == 1 and task.budget == 0.5
    assert isinstance(task.model, DigitsResNet) and not task.model.training
    assert task.example_inputs.shape == (1, 1, 8, 8) and task.num_classes == 10
    assert task.metadata["from_cache"] is False
    assert task.metadata["recipe"].startswith("digits-resnet-v0/")  # the recipe's first name
    assert accuracy(task.model, *task.data.test.as_tuple()) >= 0.95
    assert task.metadata["test_accuracy"] >= 0.95
    assert task.metadata["weights"].startswith(cache)
    folder = Path(task.metadata["weights"]).parent
    assert folder.name == NAME  # its own cache folder: never digits-cnn-v1's weights
    assert [p.name for p in folder.iterdir()] == ["seed0.pt"]  # atomic write: no temp file


def test_reloads_from_cache_and_retrain_ignores_it(trained, cache, monkeypatch) -> None:
    task = trained
    monkeypatch.setattr("prune_gym.tasks.digits.train_digits_resnet",
                        lambda *a, **k: pytest.fail("retrained despite a cache"))
    again = make_task(NAME, cache_dir=cache, budget=0.3, train=True)
    assert again.metadata["from_cache"] is True and again.budget == 0.3
    for a, b in zip(again.model.state_dict().values(), task.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    calls = []
    monkeypatch.setattr("prune_gym.tasks.digits.train_digits_resnet",
                        lambda data, seed: calls.append(seed) or DigitsResNet().eval())
    make_task(NAME, cache_dir=cache, train=True, retrain=True)
    assert calls == [0]


def test_at_least_ten_prunable_groups_none_excluded(net) -> None:
    # 3 stages x 3 blocks: 9 block-internal groups + 3 residual streams (projection shortcuts)
    assert len(net.groups) >= 10
    assert net.excluded_groups == []
    sizes = sorted(g.size for g in net.groups)
    assert sizes == [16] * 4 + [32] * 4 + [64] * 4


def test_masked_equals_physical_export_on_random_keep_states(task, net) -> None:
    rng = np.random.default_rng(0)
    x = task.data.val.x[:64]
    full = measure(task.model, (task.example_inputs,))[1]
    for _ in range(4):
        keep = [int(rng.integers(1, g.size + 1)) for g in net.groups]
        pruned = net.export(keep).eval()
        _, macs, params = measure(pruned, (task.example_inputs,))
        assert net.macs(keep) == macs < full and net.params(keep) == params
        with net.masked(keep) as masked, torch.no_grad():
            expected = masked(x)
        with torch.no_grad():
            torch.testing.assert_close(pruned(x), expected, rtol=1e-3, atol=1e-4)


def test_works_as_a_dnn_graph_env_model(task, cache, monkeypatch) -> None:
    monkeypatch.setenv("PRUNE_GYM_CACHE", cache)  # the env builds the task: reuse the cache
    env = gym.make("DNNGraph-v0", model=NAME)
    try:
        obs, info = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        done = False
        steps = 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            done = terminated or truncated
            steps += 1
        assert steps >= 1 and np.isfinite(reward)
        assert len(info["keep"]) >= 10
    finally:
        env.close()


def test_bad_architecture_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="widths"):
        DigitsResNet(widths=())
    with pytest.raises(InvalidArgumentError, match="blocks"):
        DigitsResNet(blocks=(1, 2))
    with pytest.raises(InvalidArgumentError, match="num_classes"):
        DigitsResNet(num_classes=0)
