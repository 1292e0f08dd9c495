"""Tasks: the embedded digits task (train, cache, reload) and the CIFAR tasks' inputs."""

from __future__ import annotations

import pytest
import torch

from prune_gym.data import DataSplits
from prune_gym.errors import InvalidArgumentError, TaskError
from prune_gym.models import CifarResNet, DigitsCNN
from prune_gym.tasks import Task, list_tasks, make_task, register_task
from tests.shared_data import SHARED_DATA, needs_shared


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("prune_gym_cache"))


@pytest.fixture(scope="module")
def digits_task(digits_cache) -> Task:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNE_GYM_CACHE", digits_cache)
        return make_task("digits-cnn-v0")


def test_list_tasks() -> None:
    assert {"digits-cnn-v0", "digits-resnet-v0", "cifar10-resnet20-v0",
            "cifar10-resnet56-v0"} <= set(list_tasks())


def test_digits_task_trains_to_95_percent_and_caches(digits_task, digits_cache) -> None:
    task = digits_task
    assert task.name == "digits-cnn-v0" and task.version == 0
    assert isinstance(task.model, DigitsCNN) and not task.model.training
    assert isinstance(task.data, DataSplits) and task.num_classes == 10
    assert task.example_inputs.shape == (1, 1, 8, 8)
    assert task.budget == 0.5
    assert task.metadata["from_cache"] is False
    assert accuracy(task.model, *task.data.test.as_tuple()) >= 0.95
    assert task.metadata["test_accuracy"] >= 0.95
    x, y = task.val_data
    assert x.shape[0] == y.shape[0] == len(task.data.val)
    assert task.metadata["weights"].startswith(digits_cache)


def test_digits_task_reloads_from_cache(digits_task, digits_cache, monkeypatch) -> None:
    monkeypatch.setenv("PRUNE_GYM_CACHE", digits_cache)
    monkeypatch.setattr("prune_gym.tasks.digits.train_digits_cnn",
                        lambda *a, **k: pytest.fail("retrained despite a cache"))
    again = make_task("digits-cnn-v0", budget=0.3)
    assert again.metadata["from_cache"] is True and again.budget == 0.3
    assert again.model is not digits_task.model
    for a, b in zip(again.model.state_dict().values(), digits_task.model.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert torch.equal(again.data.test.x, digits_task.data.test.x)


def test_digits_task_damaged_cache_is_rebuilt(digits_task, digits_cache, tmp_path) -> None:
    path = tmp_path / "tasks" / "digits-cnn-v0" / "seed0.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="retraining"):
        task = make_task("digits-cnn-v0", cache_dir=tmp_path)
    assert task.metadata["from_cache"] is False
    assert accuracy(task.model, *task.data.test.as_tuple()) >= 0.95
    assert torch.load(path, weights_only=True)["recipe"]  # replaced by a valid file
    assert [p.name for p in path.parent.iterdir()] == ["seed0.pt"]  # no temp files left


def test_unknown_task_and_bad_options() -> None:
    with pytest.raises(TaskError, match="known tasks: .*digits-cnn-v0"):
        make_task("digits-cnn-v9")
    with pytest.raises(TaskError, match="budgt.*budget"):
        make_task("digits-cnn-v0", budgt=0.3)
    with pytest.raises(InvalidArgumentError, match="budget"):
        make_task("digits-cnn-v0", budget=1.5)
    with pytest.raises(InvalidArgumentError, match="version suffix"):
        register_task("no-version", lambda: None, "x")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_task("digits-cnn-v0", lambda: None, "x")


def test_cifar_task_without_data_names_what_is_missing(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PRUNE_GYM_DATA", raising=False)
    with pytest.raises(TaskError, match="weights: .*PRUNE_GYM_DATA.*archive: "):
        make_task("cifar10-resnet20-v0")
    monkeypatch.setenv("PRUNE_GYM_DATA", str(tmp_path))
    with pytest.raises(TaskError, match="resnet56-cifar10-akamaster.th is not in data folder"):
        make_task("cifar10-resnet56-v0")
    with pytest.raises(TaskError, match="weights=.*nope.th.*does not exist"):
        make_task("cifar10-resnet20-v0", weights=tmp_path / "nope.th")
    with pytest.raises(TaskError, match="data folder .*does not exist"):
        make_task("cifar10-resnet20-v0", data_dir=tmp_path / "absent")


@needs_shared("resnet20-cifar10-akamaster.th", "resnet56-cifar10-akamaster.th",
              "cifar10-jpg.tar.gz")
@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "depth"), [("cifar10-resnet20-v0", 20),
                                             ("cifar10-resnet56-v0", 56)])
def test_real_cifar_tasks_build_from_env(name, depth, cifar_cache, monkeypatch) -> None:
    monkeypatch.setenv("PRUNE_GYM_DATA", str(SHARED_DATA))
    task = make_task(name, cache_dir=cifar_cache, max_train=100, max_val=200, max_test=200)
    assert isinstance(task.model, CifarResNet) and task.model.depth == depth
    assert not task.model.training and task.num_classes == 10
    assert (len(task.data.train), len(task.data.val), len(task.data.test)) == (100, 200, 200)
    assert task.data.mean == (0.485, 0.456, 0.406) and task.data.std == (0.229, 0.224, 0.225)
    assert task.example_inputs.shape == (1, 3, 32, 32)
    assert task.metadata["reference_weights"] is True
    # reference weights on JPEG CIFAR-10: about 81-83 % (see ../shared/data/README.md)
    assert accuracy(task.model, *task.data.test.as_tuple()) > 0.7
