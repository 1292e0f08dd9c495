"""Data loaders: splits, stratification, determinism, archives and their failure modes."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prune_gym.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    Split,
    default_cache_dir,
    halve_test_split,
    load_cifar10_jpeg,
    load_cifar_pickle,
    load_digits,
    load_image_folder,
    load_torchvision_dataset,
    prepare_cifar10_jpeg,
)
from prune_gym.errors import DataError, PruneGymError
from tests.shared_data import CIFAR10_JPEG, needs_shared

CLASSES = ("cat", "dog", "frog")


def colour(label: int, i: int) -> tuple[int, int, int]:
    """A class-identifiable colour: red, green or blue dominant, varied per image."""
    base = [40 + 3 * i] * 3
    base[label] = 200
    return tuple(base)


def write_folder(root: Path, per_class: dict[str, int], size=(8, 8), classes=CLASSES) -> None:
    for split, n in per_class.items():
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, colour(label, i)).save(folder / f"{i:04d}.jpg", quality=95)


def jpeg_bytes(label: int, i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour(label, i)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# --------------------------------------------------------------------------------- digits


def test_digits_split_sizes_shapes_and_normalisation() -> None:
    d = load_digits(seed=0, val_fraction=0.15, test_fraction=0.2)
    assert isinstance(d, DataSplits)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert len(d.test) == round(0.2 * 1797) and len(d.val) == round(0.15 * 1797)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.train.x.dtype == torch.float32 and d.train.y.dtype == torch.int64
    assert abs(float(d.train.x.mean())) < 1e-4 and abs(float(d.train.x.std()) - 1) < 1e-3
    restored = d.test.x * d.std[0] + d.mean[0]  # back to [0, 1] pixels
    assert restored.min() > -1e-5 and restored.max() < 1 + 1e-5


def test_digits_splits_are_stratified_disjoint_and_deterministic() -> None:
    a, b, c = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.y, c.val.y)
    for split in (a.train, a.val, a.test):
        counts = np.bincount(split.y.numpy(), minlength=10) / len(split)
        assert np.all(np.abs(counts - 0.1) < 0.02)
    flat = {name: {tuple(r) for r in s.x.flatten(1).numpy().round(4)}
            for name, s in (("train", a.train), ("val", a.val), ("test", a.test))}
    # sklearn digits has a few exact duplicate images, so allow a handful of overlaps
    assert len(flat["val"] & flat["test"]) <= 2 and len(flat["train"] & flat["val"]) <= 3


@pytest.mark.parametrize("kw", [{"val_fraction": 0}, {"test_fraction": 1.5},
                                {"val_fraction": 0.5, "test_fraction": 0.45}])
def test_digits_bad_fractions(kw) -> None:
    with pytest.raises(DataError, match="fraction"):
        load_digits(**kw)


# ----------------------------------------------------------------------------- containers


def test_split_and_datasplits_validate_their_contents() -> None:
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(DataError, match="4 images but 3 labels"):
        Split(x, y[:3])
    with pytest.raises(DataError, match="float32"):
        Split(x.double(), y)
    with pytest.raises(DataError, match="int64"):
        Split(x, y.int())
    ok = Split(x, y)
    assert ok.head(2).x.shape[0] == 2 and ok.as_tuple()[0] is x
    with pytest.raises(DataError, match="val split is empty"):
        DataSplits(ok, Split(x[:0], y[:0]), ok, classes=("a",), mean=(0.0,), std=(1.0,))
    with pytest.raises(DataError, match="labels"):
        DataSplits(ok, ok, Split(x, y + 5), classes=("a", "b"), mean=(0.0,), std=(1.0,))


def test_default_cache_dir_honours_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PRUNE_GYM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("PRUNE_GYM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "prune_gym"


# --------------------------------------------------------------------------- image folder


def test_image_folder_holds_out_stratified_val_from_train(tmp_path) -> None:
    write_folder(tmp_path, {"train": 10, "test": 4})
    d = load_image_folder(tmp_path, val_size=6, seed=1, mean=(0.5,), std=(0.25,))
    assert (len(d.train), len(d.val), len(d.test)) == (24, 6, 12)
    assert d.classes == CLASSES and d.input_shape == (3, 8, 8)
    assert np.bincount(d.val.y.numpy()).tolist() == [2, 2, 2]
    # labels follow the folder: the dominant channel of each image is its class
    pixels = d.train.x * 0.25 + 0.5
    assert torch.equal(pixels.mean((2, 3)).argmax(1), d.train.y)
    # val images are not in train
    train_rows = {tuple(r) for r in d.train.x.flatten(1).numpy().round(3)}
    assert not any(tuple(r) in train_rows for r in d.val.x.flatten(1).numpy().round(3))
    again = load_image_folder(tmp_path, val_size=6, seed=1, mean=(0.5,), std=(0.25,))
    assert torch.equal(again.val.x, d.val.x) and torch.equal(again.train.y, d.train.y)


def test_image_folder_uses_val_dir_subsets_and_computes_stats(tmp_path) -> None:
    write_folder(tmp_path, {"train": 6, "val": 2, "test": 5})
    d = load_image_folder(tmp_path, max_train=9, max_test=6)
    assert (len(d.train), len(d.val), len(d.test)) == (9, 6, 6)
    assert np.bincount(d.test.y.numpy()).tolist() == [2, 2, 2]
    assert torch.allclose(d.train.x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    gray = load_image_folder(tmp_path, mode="L", image_size=(4, 5), val_size=3)
    assert gray.input_shape == (1, 4, 5)


def test_image_folder_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(DataError, match="root=.*is not a folder"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no test/ folder"):
        load_image_folder(tmp_path)
    write_folder(tmp_path, {"train": 3, "test": 1})
    with pytest.raises(DataError, match="val_size"):
        load_image_folder(tmp_path, val_size=0)
    with pytest.raises(DataError, match="val_size"):
        load_image_folder(tmp_path, val_size=9)
    with pytest.raises(DataError, match="max_train"):
        load_image_folder(tmp_path, val_size=3, max_train=-1)
    (tmp_path / "train" / "emu").mkdir()
    with pytest.raises(DataError, match="emu.*holds no images"):
        load_image_folder(tmp_path, val_size=3)
    (tmp_path / "train" / "emu").rmdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "train" / "cat" / "big.jpg")
    with pytest.raises(DataError, match="image_size"):
        load_image_folder(tmp_path, val_size=3)
    (tmp_path / "train" / "cat" / "big.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="could not decode"):
        load_image_folder(tmp_path, val_size=3)


# ------------------------------------------------------------------------- jpeg archives


def make_archive(path: Path, per_class=(6, 2)) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split, n in zip(("train", "test"), per_class, strict=True):
            for label, cls in enumerate(CLASSES):
                for i in range(n):
                    add_bytes(tar, f"tiny/{split}/{cls}/{i:04d}.jpg", jpeg_bytes(label, i))
    return path


def test_prepare_archive_extracts_once_and_caches_arrays(tmp_path) -> None:
    archive = make_archive(tmp_path / "tiny.tar.gz")
    cache = tmp_path / "cache"
    entry = prepare_cifar10_jpeg(archive, cache)
    assert (entry / "images" / "tiny" / "train" / "dog" / "0003.jpg").is_file()
    x = np.load(entry / "train_x.npy")
    assert x.shape == (18, 8, 8, 3) and x.dtype == np.uint8
    assert np.load(entry / "test_y.npy").tolist() == [0, 0, 1, 1, 2, 2]
    stamp = (entry / "train_x.npy").stat().st_mtime_ns
    assert prepare_cifar10_jpeg(archive, cache) == entry  # second call: no work
    assert (entry / "train_x.npy").stat().st_mtime_ns == stamp
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temp folders left

    d = load_cifar10_jpeg(archive, cache, val_size=3, max_train=6)
    assert (len(d.train), len(d.val), len(d.test)) == (6, 3, 6)
    assert d.mean == IMAGENET_MEAN and d.std == IMAGENET_STD
    pixels = d.test.x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(
        IMAGENET_MEAN).view(1, 3, 1, 1)
    assert torch.equal(pixels.mean((2, 3)).argmax(1), d.test.y)
    # the same files as an image folder give the same images
    folder = load_image_folder(entry / "images" / "tiny", val_size=3, max_train=6,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert torch.allclose(folder.test.x[folder.test.y.argsort(stable=True)],
                          d.test.x[d.test.y.argsort(stable=True)])


@pytest.mark.parametrize("bad_name", ["../escape.jpg", "/abs/evil.jpg", "tiny/../../x.jpg"])
def test_prepare_archive_rejects_paths_leaving_the_folder(tmp_path, bad_name) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_bytes(tar, "tiny/train/cat/0.jpg", jpeg_bytes(0, 0))
        add_bytes(tar, bad_name, b"x")
    with pytest.raises(DataError, match="outside the extraction folder"):
        prepare_cifar10_jpeg(archive, tmp_path / "cache")
    assert not (tmp_path / "escape.jpg").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-done


def test_prepare_archive_rejects_links_and_missing_splits(tmp_path) -> None:
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("tiny/train/cat/link.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DataError, match="link"):
        prepare_cifar10_jpeg(archive, tmp_path / "cache")
    only_train = tmp_path / "train_only.tar.gz"
    with tarfile.open(only_train, "w:gz") as tar:
        add_bytes(tar, "t/train/cat/0.jpg", jpeg_bytes(0, 0))
    with pytest.raises(DataError, match="test/<class>"):
        prepare_cifar10_jpeg(only_train, tmp_path / "cache")
    with pytest.raises(DataError, match="archive=.*does not exist"):
        prepare_cifar10_jpeg(tmp_path / "absent.tar.gz", tmp_path / "cache")


# ------------------------------------------------------------------------ cifar pickles


def cifar_pickle_archive(path: Path, n_per_batch: int = 6, bad_labels: bool = False) -> Path:
    """A miniature cifar-10-batches-py archive with the original (bytes-keyed) layout."""
    rng = np.random.default_rng(0)

    def batch(n: int, offset: int) -> bytes:
        labels = [(offset + i) % 10 for i in range(n)]
        data = np.zeros((n, 3072), dtype=np.uint8)
        for i, label in enumerate(labels):
            data[i] = rng.integers(0, 50, 3072)
            data[i, :1024] = label * 20  # red plane encodes the label
        if bad_labels:
            labels = labels[:-1]
        return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}, protocol=2)

    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            add_bytes(tar, f"cifar-10-batches-py/data_batch_{i}", batch(n_per_batch * 10, i))
        add_bytes(tar, "cifar-10-batches-py/test_batch", batch(20, 0))
        add_bytes(tar, "cifar-10-batches-py/batches.meta",
                  pickle.dumps({b"label_names": names}, protocol=2))
    return path


def test_cifar_pickle_archive_and_folder(tmp_path) -> None:
    archive = cifar_pickle_archive(tmp_path / "cifar-10-python.tar.gz")
    d = load_cifar_pickle(archive, val_size=50, seed=0, mean=(0.0,), std=(1.0,))
    assert (len(d.train), len(d.val), len(d.test)) == (250, 50, 20)
    assert d.classes[0] == "airplane" and d.num_classes == 10 and d.input_shape == (3, 32, 32)
    assert np.bincount(d.val.y.numpy()).tolist() == [5] * 10
    red = (d.train.x[:, 0] * 255).round().to(torch.int64)
    assert torch.equal(red[:, 0, 0], d.train.y * 20)  # CHW reshaping kept the planes apart
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    for path in (tmp_path / "x", tmp_path / "x" / "cifar-10-batches-py"):
        same = load_cifar_pickle(path, val_size=50, seed=0, mean=(0.0,), std=(1.0,))
        assert torch.equal(same.val.x, d.val.x)


def test_cifar_pickle_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="label"):
        load_cifar_pickle(cifar_pickle_archive(tmp_path / "bad.tar.gz", bad_labels=True))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_cifar_pickle(tmp_path)
    evil = tmp_path / "evil" / "cifar-10-batches-py"
    evil.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (evil / name).write_bytes(pickle.dumps(print))  # a callable: must be refused
    with pytest.raises(DataError, match="refusing"):
        load_cifar_pickle(evil)


def test_torchvision_loader_without_torchvision(monkeypatch, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(PruneGymError, match="pip install torchvision"):
        load_torchvision_dataset("CIFAR10", tmp_path)


# --------------------------------------------------------------------------- real data


@needs_shared("cifar10-jpg.tar.gz")
@pytest.mark.shared_data
def test_real_cifar10_jpeg_subset(cifar_cache) -> None:
    d = load_cifar10_jpeg(CIFAR10_JPEG, cifar_cache, max_train=200, max_val=100, max_test=100)
    assert d.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                         "horse", "ship", "truck")
    assert (len(d.train), len(d.val), len(d.test)) == (200, 100, 100)
    assert d.input_shape == (3, 32, 32)
    assert np.bincount(d.test.y.numpy()).tolist() == [10] * 10
    counts = np.load(next(cifar_cache.glob("cifar10-jpg-*")) / "train_y.npy")
    assert np.bincount(counts).tolist() == [5000] * 10
    # max_val is a prefix of the full 1000-image validation split
    full_val = load_cifar10_jpeg(CIFAR10_JPEG, cifar_cache, max_train=10, max_test=10)
    assert len(full_val.val) == 1000 and torch.equal(full_val.val.x[:100], d.val.x)


def test_validation_from_the_test_split_half(tmp_path) -> None:
    archive = cifar_pickle_archive(tmp_path / "cifar-10-python.tar.gz")
    d = load_cifar_pickle(archive, val_size=5, seed=0, val_from="test", mean=(0.0,),
                          std=(1.0,))
    assert (len(d.train), len(d.val), len(d.test)) == (300, 5, 10)  # all train, halves of 20
    flat = {s: {tuple(x[1].flatten()[:64].tolist()) for x in getattr(d, s).x}
            for s in ("val", "test")}
    assert not flat["val"] & flat["test"]  # no image in both
    other = load_cifar_pickle(archive, val_size=10, seed=3, val_from="test", mean=(0.0,),
                              std=(1.0,))
    # the test half is fixed by the data, not by the seed; the seed only reorders it
    assert sorted(other.test.y.tolist()) == sorted(d.test.y.tolist())
    assert {tuple(x[1].flatten()[:64].tolist()) for x in other.test.x} == flat["test"]
    val_pool, test_pool = halve_test_split(np.arange(20) % 10)
    assert np.bincount(val_pool % 10).tolist() == [1] * 10  # stratified
    assert sorted(np.concatenate([val_pool, test_pool]).tolist()) == list(range(20))
    with pytest.raises(DataError, match="val_size=11.*validation half"):
        load_cifar_pickle(archive, val_size=11, val_from="test")
    with pytest.raises(DataError, match="val_from='tset' must be one of"):
        load_cifar_pickle(archive, val_from="tset")


def test_truncated_or_corrupt_cifar_archive(tmp_path) -> None:
    archive = cifar_pickle_archive(tmp_path / "cifar-10-python.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or not a readable tar.*fetch it again"):
        load_cifar_pickle(cut)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 8)  # gzip magic, then garbage
    with pytest.raises(DataError, match="truncated or not a readable tar"):
        load_cifar_pickle(junk)
