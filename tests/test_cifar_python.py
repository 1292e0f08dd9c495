"""cifar10-resnet*-v1: the standard CIFAR-10 archive, verified downloads, honest splits.

Everything runs on a miniature archive in the standard ``cifar-10-python.tar.gz`` format
and a freshly initialised ResNet-20 checkpoint, written by the tests; downloads use
``file://`` URLs (and a refused local port for "no network"), with the reference URL and
sha256 entries patched to point at them.
"""

from __future__ import annotations

import pickle
import tarfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch

from prune_gym.data import CIFAR10_PYTHON, file_sha256
from prune_gym.errors import CheckpointError, DataError, TaskError
from prune_gym.models import KNOWN_CHECKPOINTS, CifarResNet, resnet20
from prune_gym.tasks import list_tasks, make_task

NAME = "cifar10-resnet20-v1"
KEY = "resnet20-cifar10-akamaster"
NO_NETWORK = "http://127.0.0.1:9/"  # the discard port: refused at once, like a dead network


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, BytesIO(data))


def standard_archive(path: Path, per_batch: int = 20, n_test: int = 40) -> Path:
    """cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}, bytes-keyed pickles.

    Every image is unique: its first green pixels hold its batch and index.
    """

    def batch(n: int, tag: int) -> bytes:
        labels = [i % 10 for i in range(n)]
        data = np.random.default_rng(tag).integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 1024] = tag
        data[:, 1025] = np.arange(n)
        return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)

    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            _add(tar, f"cifar-10-batches-py/data_batch_{i}", batch(per_batch, i))
        _add(tar, "cifar-10-batches-py/test_batch", batch(n_test, 0))
        _add(tar, "cifar-10-batches-py/batches.meta",
             pickle.dumps({b"label_names": names}, protocol=2))
    return path


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """A data folder holding the archive and a ResNet-20 checkpoint under reference names."""
    folder = tmp_path / "data"
    folder.mkdir()
    archive = standard_archive(folder / CIFAR10_PYTHON["filename"])
    torch.manual_seed(0)
    weights = folder / KNOWN_CHECKPOINTS[KEY]["filename"]
    torch.save({"state_dict": resnet20().state_dict()}, weights)
    return {"folder": folder, "archive": archive, "weights": weights}


@pytest.fixture
def as_reference(files, monkeypatch) -> dict[str, Path]:
    """Make the generated files the 'reference' ones: their file:// URLs and sha256."""
    monkeypatch.setitem(CIFAR10_PYTHON, "url", files["archive"].as_uri())
    monkeypatch.setitem(CIFAR10_PYTHON, "sha256", file_sha256(files["archive"]))
    monkeypatch.setitem(KNOWN_CHECKPOINTS[KEY], "url", files["weights"].as_uri())
    monkeypatch.setitem(KNOWN_CHECKPOINTS[KEY], "sha256", file_sha256(files["weights"]))
    monkeypatch.delenv("PRUNE_GYM_DATA", raising=False)
    return files


def green(split) -> set[tuple[int, int]]:
    """(batch tag, index) of every image of a split (mean/std 0/1 keep the raw pixels)."""
    px = (split.x[:, 1, 0, :2] * 255).round().to(torch.int64)
    return {(int(a), int(b)) for a, b in px}


def test_v1_tasks_are_listed_beside_v0() -> None:
    assert {"cifar10-resnet20-v0", "cifar10-resnet56-v0", NAME,
            "cifar10-resnet56-v1"} <= set(list_tasks())


def test_builds_from_data_folder_with_validation_from_half_of_test(as_reference,
                                                                   tmp_path) -> None:
    task = make_task(NAME, data_dir=as_reference["folder"], cache_dir=tmp_path / "c",
                     val_size=10)
    assert isinstance(task.model, CifarResNet) and task.model.depth == 20
    assert not task.model.training and task.num_classes == 10
    # all 100 training images; validation from the first test half, test = the other 20
    assert (len(task.data.train), len(task.data.val), len(task.data.test)) == (100, 10, 20)
    assert task.example_inputs.shape == (1, 3, 32, 32)
    assert task.metadata["reference_data"] is True and task.metadata["reference_weights"]
    assert task.metadata["val_from"] == "test"
    assert "never seen in training" in task.description and "other half" in task.description
    norm = make_task(NAME, data_dir=as_reference["folder"], cache_dir=tmp_path / "c",
                     val_size=10)
    assert torch.equal(norm.data.val.x, task.data.val.x)  # deterministic


def test_validation_sets_never_overlap_test(as_reference, tmp_path, monkeypatch) -> None:
    from prune_gym.data import load_cifar_pickle

    archive = as_reference["archive"]
    for val_from in ("test", "train"):
        d = load_cifar_pickle(archive, val_size=10, val_from=val_from, mean=(0.0,), std=(1.0,))
        val, test, train = green(d.val), green(d.test), green(d.train)
        assert not val & test and not val & train
        assert {t for t, _ in val} == ({0} if val_from == "test" else {1, 2, 3, 4, 5})
    task = make_task(NAME, data_dir=as_reference["folder"], val_from="train", val_size=10,
                     cache_dir=tmp_path)
    assert (len(task.data.train), len(task.data.val), len(task.data.test)) == (90, 10, 40)
    assert "held out of train" in task.description and "seen in training" in task.description


def test_download_fetches_both_files_into_the_cache(as_reference, tmp_path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(TaskError, match=r"download=True.*"
                       + KNOWN_CHECKPOINTS[KEY]["url"].replace(".", r"\.")):
        make_task(NAME, cache_dir=cache)
    task = make_task(NAME, cache_dir=cache, download=True, val_size=10)
    downloads = cache / "downloads"
    assert sorted(p.name for p in downloads.iterdir()) == sorted(
        [CIFAR10_PYTHON["filename"], KNOWN_CHECKPOINTS[KEY]["filename"]])  # no .part files
    assert Path(task.metadata["archive"]).parent == downloads
    assert task.metadata["reference_data"] is True
    # later builds find them in the cache, with no download asked for
    again = make_task(NAME, cache_dir=cache, val_size=10)
    assert again.metadata["archive"] == task.metadata["archive"]


def test_download_without_network_says_what_to_fetch_and_where(as_reference, monkeypatch,
                                                                tmp_path) -> None:
    monkeypatch.setitem(CIFAR10_PYTHON, "url", NO_NETWORK + "cifar-10-python.tar.gz")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"could not download.*by hand.*save it as .*"
                       r"downloads/cifar-10-python\.tar\.gz"):
        make_task(NAME, cache_dir=cache, download=True)
    # the checkpoint came through; nothing half-written beside it
    assert [p.name for p in (cache / "downloads").iterdir()] == [
        KNOWN_CHECKPOINTS[KEY]["filename"]]


def test_download_with_wrong_sha256_saves_nothing(as_reference, monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(KNOWN_CHECKPOINTS[KEY], "sha256", "0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match="sha256 mismatch.*nothing was saved"):
        make_task(NAME, cache_dir=cache, download=True)
    assert list((cache / "downloads").iterdir()) == []


def test_reference_named_file_with_wrong_sha256_is_refused(as_reference, tmp_path) -> None:
    weights = as_reference["weights"]
    torch.save({"state_dict": resnet20().state_dict(), "epoch": 1}, weights)  # another file
    with pytest.raises(CheckpointError, match="weights: .*has sha256 .*not the reference"):
        make_task(NAME, data_dir=as_reference["folder"], cache_dir=tmp_path)
    # an explicit path may be any checkpoint: built, and recorded as not the reference
    task = make_task(NAME, weights=weights, archive=as_reference["archive"],
                     cache_dir=tmp_path, val_size=10)
    assert task.metadata["reference_weights"] is False


def test_corrupt_or_truncated_archive(as_reference, monkeypatch, tmp_path) -> None:
    archive = as_reference["archive"]
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(DataError, match="truncated or not a readable tar archive"):
        make_task(NAME, archive=cut, weights=as_reference["weights"], cache_dir=tmp_path)
    # the same bytes under the reference name in the cache: refused by sha256 before reading
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / CIFAR10_PYTHON["filename"]).write_bytes(cut.read_bytes())
    with pytest.raises(DataError, match="archive: .*not the reference.*delete it"):
        make_task(NAME, weights=as_reference["weights"], cache_dir=tmp_path / "cache")


def test_bad_options(as_reference, tmp_path) -> None:
    with pytest.raises(TaskError, match="download='yes' must be True or False"):
        make_task(NAME, download="yes", cache_dir=tmp_path)
    with pytest.raises(DataError, match="val_from='dev'"):
        make_task(NAME, data_dir=as_reference["folder"], val_from="dev", cache_dir=tmp_path)
    with pytest.raises(TaskError, match="unknown option.*'download'"):
        make_task("cifar10-resnet20-v0", download=True)
