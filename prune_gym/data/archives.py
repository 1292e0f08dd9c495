"""CIFAR-10/100 "python version" pickle archives and torchvision data sets.

The pickle files are read with a restricted unpickler that only rebuilds plain containers
and numpy arrays, so a tampered archive cannot run code. torchvision is imported only
when its loader is called.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prune_gym.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    build_splits,
    choose_indices,
)
from prune_gym.errors import DataError, MissingDependencyError

__all__ = ["CIFAR10_PYTHON", "load_cifar_pickle", "load_torchvision_dataset"]

# The standard CIFAR-10 "python version" (what torchvision downloads). The sha256 is the one
# Keras pins for this URL; the site itself publishes the md5 (kept for reference).
CIFAR10_PYTHON: dict[str, str] = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "sha256": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "md5": "c58f30108f718f92721af3b95e74349a",
    "filename": "cifar-10-python.tar.gz",
    "size": "170498071",
}

# (train files, test file, meta file, label key, class-names key) per layout.
_LAYOUTS = {
    "cifar-10-batches-py": (
        [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
        "labels", "label_names",
    ),
    "cifar-100-python": (["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data archive")


def _unpickle(raw: bytes, name: str) -> dict[str, Any]:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"CIFAR file {name!r} is not a readable CIFAR pickle: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR file {name!r} holds a {type(obj).__name__}, expected a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_tar(tar: tarfile.TarFile) -> tuple[str, dict[str, bytes]] | None:
    """(layout, {file name: bytes}) of the first CIFAR layout in ``tar``, or None.

    Reads the whole archive, so a truncated one fails here, inside the caller's handler.
    """
    members = {m.name: m for m in tar.getmembers() if m.isfile()}
    for layout in _LAYOUTS:
        if any(name.startswith(layout + "/") for name in members):
            return layout, {
                name.split("/", 1)[1]: tar.extractfile(m).read()
                for name, m in members.items()
                if name.startswith(layout + "/")
            }
    return None


def _reader(path: Path):
    """Return (layout name, read(filename) -> bytes) for a folder or a tar archive."""
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                found = _read_tar(tar)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"path={str(path)!r} is truncated or not a readable tar archive "
                f"({type(exc).__name__}: {exc}); delete it and fetch it again (the standard "
                f"CIFAR-10 archive is {CIFAR10_PYTHON['filename']}, sha256 "
                f"{CIFAR10_PYTHON['sha256'][:12]}..., from {CIFAR10_PYTHON['url']})"
            ) from exc
        if found is not None:
            layout, contents = found
            return layout, contents.__getitem__, contents.__contains__
    elif path.is_dir():
        for layout in _LAYOUTS:
            folder = path if path.name == layout else path / layout
            if folder.is_dir():
                return layout, (lambda f, d=folder: (d / f).read_bytes()), (
                    lambda f, d=folder: (d / f).is_file())
    raise DataError(
        f"path={str(path)!r} is neither a cifar-10-batches-py / cifar-100-python folder, a folder "
        "holding one, nor a .tar.gz archive of one (the 'python version' from the CIFAR site)"
    )


def load_cifar_pickle(
    path: str | os.PathLike,
    *,
    val_size: int = 1000,
    seed: int = 0,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    val_from: str = "train",
) -> DataSplits:
    """CIFAR-10 or CIFAR-100 (fine labels) from the original pickle release.

    Args:
        path: ``cifar-10-batches-py`` / ``cifar-100-python`` folder, its parent, or the
            ``.tar.gz`` archive (read without extracting).
        val_size: Validation images (stratified, seeded).
        seed: Seed of the split and subsets.
        max_train: At most this many training images; None keeps all.
        max_val: At most this many validation images.
        max_test: At most this many test images.
        mean: Per-channel mean of [0, 1] pixels used for normalisation.
        std: Per-channel std used for normalisation.
        val_from: ``"train"``: validation held out of the training images; ``"test"``:
            drawn from one fixed half of the test split, the other half being the test
            split (for models trained on all training images).

    Raises:
        DataError: Not a CIFAR archive, a truncated or corrupt one, missing batch files,
            or data/label count mismatch.
    """
    path = Path(path)
    layout, read, has = _reader(path)
    train_files, test_file, meta_file, label_key, names_key = _LAYOUTS[layout]
    for needed in [*train_files, test_file, meta_file]:
        if not has(needed):
            raise DataError(f"path={str(path)!r}: {layout}/{needed} is missing")

    def batch(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(read(f), f)
            if "data" not in d or label_key not in d:
                raise DataError(f"{layout}/{f} lacks the 'data' or '{label_key}' entry")
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d[label_key], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise DataError(f"{layout}/{f}: data has shape {x.shape}, expected (N, 3072)")
            if len(x) != len(y):
                raise DataError(
                    f"{layout}/{f}: {len(x)} images but {len(y)} labels; they must match"
                )
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    images, labels = {}, {}
    images["train"], labels["train"] = batch(train_files)
    images["test"], labels["test"] = batch([test_file])
    meta = _unpickle(read(meta_file), meta_file)
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]
    if not classes or labels["train"].max() >= len(classes):
        raise DataError(
            f"{layout}/{meta_file}: '{names_key}' lists {len(classes)} classes but labels go "
            f"up to {int(labels['train'].max())}"
        )
    indices = choose_indices(
        labels["train"], labels["test"], None, val_size=val_size, seed=seed,
        max_train=max_train, max_val=max_val, max_test=max_test, val_from=val_from,
    )
    return build_splits(images, labels, indices, classes, mean, std, val_from)


def load_torchvision_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    download: bool = False,
    val_size: int = 1000,
    seed: int = 0,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DataSplits:
    """A torchvision classification data set with ``train=True/False`` (CIFAR10, MNIST, ...).

    Needs torchvision (imported here, not at package import). Images are converted to uint8
    arrays and normalised like the other loaders; None mean/std are computed from train.

    Raises:
        MissingDependencyError: torchvision is not installed.
        DataError: Unknown data set name.
    """
    try:
        datasets = importlib.import_module("torchvision.datasets")
    except ImportError as exc:
        raise MissingDependencyError(
            f"load_torchvision_dataset({name!r}) needs torchvision, which is not installed; "
            "install it with `pip install torchvision`, or use load_image_folder / "
            "load_cifar_pickle / load_cifar10_jpeg, which do not need it"
        ) from exc
    cls = getattr(datasets, str(name), None)
    if cls is None:
        raise DataError(f"name={name!r} is not a torchvision.datasets class (e.g. 'CIFAR10')")
    images, labels = {}, {}
    for split, train in (("train", True), ("test", False)):
        ds = cls(str(root), train=train, download=download)
        arrays, targets = [], []
        for img, target in ds:
            arr = np.asarray(img, dtype=np.uint8)
            arrays.append(arr[:, :, None] if arr.ndim == 2 else arr)
            targets.append(int(target))
        images[split] = np.stack(arrays)
        labels[split] = np.asarray(targets, dtype=np.int64)
        if split == "train":
            n_cls = int(labels[split].max()) + 1
            classes = [str(c) for c in getattr(ds, "classes", [])] or [str(i) for i in range(n_cls)]
    indices = choose_indices(
        labels["train"], labels["test"], None, val_size=val_size, seed=seed,
        max_train=max_train, max_val=max_val, max_test=max_test,
    )
    return build_splits(images, labels, indices, classes, mean, std)
