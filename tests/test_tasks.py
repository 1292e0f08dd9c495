"""Tasks: the embedded digits tasks (shipped weights; the recipe that trains them, its cache)
and the CIFAR tasks' inputs and splits."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from prune_gym.data import DataSplits
from prune_gym.errors import CheckpointError, InvalidArgumentError, TaskError
from prune_gym.models import CifarResNet, DigitsCNN
from prune_gym.tasks import Task, list_tasks, make_task, register_task
from tests.shared_data import SHARED_DATA, needs_shared

# What the shipped -v1 networks are, on any CPU: a digest of their state dict, and their
# logits on the validation split (sum, sum of magnitudes) and correct answers on val / test.
# A change of weights, architecture, forward or data split fails here: bump the version.
SHIPPED = {
    "digits-cnn-v1": ("f517457dbbaeb8274786ff04617634d5a2bd56c7fbfff418316e11c430bd3836",
                      -4592.8048, 9352.8318, 267, 353),
    "digits-resnet-v1": ("5c3c07cc4fe3e425c140326f6eade8184548088bcde8948046c367dcd34a6bfc",
                         -1262.5490, 7166.0014, 264, 354),
}


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("prune_gym_cache"))


@pytest.fixture(scope="module")
def digits_task(digits_cache) -> Task:
    """digits-cnn-v1 trained here by its recipe (not the shipped weights)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNE_GYM_CACHE", digits_cache)
        return make_task("digits-cnn-v1", train=True)


def test_list_tasks() -> None:
    assert {"digits-cnn-v1", "digits-resnet-v1", "digits-cnn-v0", "digits-resnet-v0",
            "cifar10-resnet20-v2", "cifar10-resnet56-v2", "cifar10-resnet20-v0",
            "cifar10-resnet56-v0"} <= set(list_tasks())


def _state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_network_is_the_same_everywhere(name, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(tmp_path))  # an empty cache: nothing trained
    monkeypatch.setattr("prune_gym.tasks.digits.train_digits",
                        lambda *a, **k: pytest.fail("trained instead of loading"))
    task = make_task(name)
    digest, logit_sum, logit_abs, val_correct, test_correct = SHIPPED[name]
    assert task.metadata["shipped"] is True and task.version == 1
    assert _state_digest(task.model) == digest
    with torch.no_grad():
        val_logits = task.model(task.data.val.x).double()
        test_logits = task.model(task.data.test.x)
    assert float(val_logits.sum()) == pytest.approx(logit_sum, abs=1e-2)
    assert float(val_logits.abs().sum()) == pytest.approx(logit_abs, abs=1e-2)
    assert int((val_logits.argmax(1) == task.data.val.y).sum()) == val_correct
    assert int((test_logits.argmax(1) == task.data.test.y).sum()) == test_correct
    assert list(tmp_path.iterdir()) == []  # nothing written to the cache


def test_shipped_weights_are_checked(monkeypatch, tmp_path) -> None:
    from prune_gym.tasks import digits

    folder = tmp_path / "weights"
    shutil.copytree(digits.WEIGHTS_DIR, folder)
    monkeypatch.setattr(digits, "WEIGHTS_DIR", folder)
    make_task("digits-cnn-v1")  # the copy is intact
    path = folder / digits.SHIPPED_WEIGHTS["digits-cnn-v1"][0][0]
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="digits-cnn-v1-seed0.pt.*sha256.*reinstall"):
        make_task("digits-cnn-v1")
    path.unlink()
    with pytest.raises(CheckpointError, match="missing from the installed package"):
        make_task("digits-cnn-v1")
    with pytest.raises(TaskError, match="seed=3: .*seed\\(s\\) \\[0\\] only.*train=True"):
        make_task("digits-resnet-v1", seed=3)
    with pytest.raises(TaskError, match="retrain=True .*train=True"):
        make_task("digits-resnet-v1", retrain=True)
    with pytest.raises(TaskError, match="train='yes' must be True or False"):
        make_task("digits-resnet-v1", train="yes")


def test_the_recipe_still_trains_a_network_like_the_shipped_one(digits_task) -> None:
    """The training code behind the shipped weights still works: same accuracy, +- a bit
    (the exact weights depend on the CPU)."""
    shipped = make_task("digits-cnn-v1")
    assert digits_task.metadata["shipped"] is False
    for split in ("val", "test"):
        trained = accuracy(digits_task.model, *getattr(digits_task.data, split).as_tuple())
        reference = accuracy(shipped.model, *getattr(shipped.data, split).as_tuple())
        assert trained == pytest.approx(reference, abs=0.03)


def test_digits_task_trains_to_95_percent_and_caches(digits_task, digits_cache) -> None:
    task = digits_task
    assert task.name == "digits-cnn-v1" and task.version == 1
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
    again = make_task("digits-cnn-v1", budget=0.3, train=True)
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
        task = make_task("digits-cnn-v0", cache_dir=tmp_path)  # v0: trained on first use
    assert "depend on the CPU" in task.description
    assert task.metadata["from_cache"] is False
    assert accuracy(task.model, *task.data.test.as_tuple()) >= 0.95
    assert torch.load(path, weights_only=True)["recipe"]  # replaced by a valid file
    assert [p.name for p in path.parent.iterdir()] == ["seed0.pt"]  # no temp files left


def test_unknown_task_and_bad_options() -> None:
    with pytest.raises(TaskError, match="known tasks: .*digits-cnn-v0"):
        make_task("digits-cnn-v9")
    with pytest.raises(TaskError, match="budgt.*budget"):
        make_task("digits-cnn-v1", budgt=0.3)
    with pytest.raises(InvalidArgumentError, match="budget"):
        make_task("digits-cnn-v1", budget=1.5)
    with pytest.raises(InvalidArgumentError, match="version suffix"):
        register_task("no-version", lambda: None, "x")
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_task("digits-cnn-v1", lambda: None, "x")


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
                                             ("cifar10-resnet56-v0", 56),
                                             ("cifar10-resnet20-v2", 20),
                                             ("cifar10-resnet56-v2", 56)])
def test_real_cifar_tasks_build_from_env(name, depth, cifar_cache, monkeypatch) -> None:
    monkeypatch.setenv("PRUNE_GYM_DATA", str(SHARED_DATA))
    task = make_task(name, cache_dir=cifar_cache, max_train=100, max_val=200, max_test=200)
    assert task.metadata["val_from"] == ("train" if name.endswith("-v0") else "test")
    assert isinstance(task.model, CifarResNet) and task.model.depth == depth
    assert not task.model.training and task.num_classes == 10
    assert (len(task.data.train), len(task.data.val), len(task.data.test)) == (100, 200, 200)
    assert task.data.mean == (0.485, 0.456, 0.406) and task.data.std == (0.229, 0.224, 0.225)
    assert task.example_inputs.shape == (1, 3, 32, 32)
    assert task.metadata["reference_weights"] is True
    # reference weights on JPEG CIFAR-10: about 81-83 % (see ../shared/data/README.md)
    assert accuracy(task.model, *task.data.test.as_tuple()) > 0.7


@needs_shared("resnet20-cifar10-akamaster.th", "cifar10-jpg.tar.gz")
@pytest.mark.shared_data
def test_v2_validates_on_half_of_test_the_weights_never_saw(cifar_cache, monkeypatch) -> None:
    """v2's validation and test splits are two disjoint halves of CIFAR-10's test images,
    the same halves for every seed; v0's validation images come from train."""
    monkeypatch.setenv("PRUNE_GYM_DATA", str(SHARED_DATA))

    def rows(x: torch.Tensor) -> set[bytes]:
        return {img.numpy().tobytes() for img in x}

    v2 = make_task("cifar10-resnet20-v2", cache_dir=cifar_cache, max_train=2000)
    full_test = rows(make_task("cifar10-resnet20-v0", cache_dir=cifar_cache, max_train=10,
                               max_val=10).data.test.x)
    v0 = make_task("cifar10-resnet20-v0", cache_dir=cifar_cache, max_train=2000, max_test=10)
    assert len(v2.data.val) == 1000 and len(v2.data.test) == 5000
    val, test = rows(v2.data.val.x), rows(v2.data.test.x)
    assert not val & test and val <= full_test and test <= full_test
    assert not rows(v0.data.val.x) & full_test
    other_seed = make_task("cifar10-resnet20-v2", cache_dir=cifar_cache, max_train=10, seed=1)
    assert rows(other_seed.data.test.x) == test  # the reported half never moves
    assert "never seen in training" in v2.description
