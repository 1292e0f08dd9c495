"""Train/validation/test splits as tensors, and the seeded, stratified selection behind them.

Every loader in :mod:`prune_gym.data` ends here, so all data sets share one contract:
``x`` float32 NCHW (normalised), ``y`` int64, a validation split that never overlaps the
test split (selecting or rewarding on test data would leak it) — held out of the training
images, or, for models that were trained on all of them, taken from one fixed half of the
test split while the other half is the test split — and split orders shuffled with the
seed so any prefix is a fair, class-mixed sample.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prune_gym.errors import DataError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VAL_SOURCES",
    "DataSplits",
    "Split",
    "default_cache_dir",
    "halve_test_split",
]

# Where the validation split comes from: held out of train, or from half of the test split.
VAL_SOURCES = ("train", "test")
# The test split is halved with this fixed seed, never the caller's, so that the test half
# (what results are reported on) is the same images for every seed, run and machine.
TEST_HALVES_SEED = 0

# The normalisation the akamaster CIFAR checkpoints were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_cache_dir() -> Path:
    """``$PRUNE_GYM_CACHE`` if set, else ``~/.cache/prune_gym`` (not created here)."""
    env = os.environ.get("PRUNE_GYM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prune_gym"


@dataclass(frozen=True)
class Split:
    """One split: ``x`` float32 of shape (N, C, H, W) and ``y`` int64 of shape (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise DataError("Split(x, y) needs two torch tensors")
        if self.x.dim() != 4 or self.x.dtype != torch.float32:
            raise DataError(
                f"Split x must be float32 of shape (N, C, H, W), got {self.x.dtype} "
                f"{tuple(self.x.shape)}"
            )
        if self.y.dim() != 1 or self.y.dtype != torch.int64:
            raise DataError(f"Split y must be int64 of shape (N,), got {self.y.dtype} "
                            f"{tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise DataError(
                f"Split has {len(self.x)} images but {len(self.y)} labels; they must match"
            )

    def __len__(self) -> int:
        return len(self.y)

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, the form environments take as ``val_data``."""
        return self.x, self.y

    def head(self, n: int) -> Split:
        """The first ``n`` samples (a fair sample, since loaders shuffle split order)."""
        return Split(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test splits of one data set, plus what describes them."""

    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        shapes = {name: tuple(s.x.shape[1:]) for name, s in self._named()}
        if len(set(shapes.values())) != 1:
            raise DataError(f"all splits must share one image shape, got {shapes}")
        for name, split in self._named():
            if len(split) == 0:
                raise DataError(
                    f"the {name} split is empty; check the data folder, the fractions or "
                    "the max_*/val_size arguments (each split needs at least one sample)"
                )
            lo, hi = int(split.y.min()), int(split.y.max())
            if lo < 0 or hi >= len(self.classes):
                raise DataError(
                    f"{name} labels span [{lo}, {hi}] but there are {len(self.classes)} "
                    "classes; labels must lie in [0, num_classes)"
                )

    def _named(self) -> list[tuple[str, Split]]:
        return [("train", self.train), ("val", self.val), ("test", self.test)]

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)


def check_limit(value: int | None, name: str) -> int | None:
    """Validate a ``max_*``/size argument: None or a positive int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name}={value!r} must be None or a positive int")
    return int(value)


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` samples whose class proportions match ``labels`` (largest remainder)."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / len(labels))
    quota = np.floor(exact).astype(int)
    short = n - int(quota.sum())
    if short:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


def halve_test_split(test_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the test set into two fixed, class-stratified halves: (validation pool, test).

    Used when a model was trained on every training image, so that no held-out training
    image exists: validation then comes from the first half and results are reported on
    the second, which selection and rewards never see. The halves depend only on the
    labels (a fixed seed), not on any run's seed.
    """
    rng = np.random.default_rng(TEST_HALVES_SEED)
    val_pool = stratified_sample(test_y, len(test_y) // 2, rng)
    return val_pool, np.setdiff1d(np.arange(len(test_y)), val_pool)


def check_val_from(val_from: str) -> str:
    """Validate the ``val_from`` argument."""
    if val_from not in VAL_SOURCES:
        raise DataError(f"val_from={val_from!r} must be one of {VAL_SOURCES}: 'train' holds "
                        "validation out of the training images, 'test' draws it from one "
                        "fixed half of the test split and keeps the other half for testing")
    return val_from


def choose_indices(
    train_y: np.ndarray,
    test_y: np.ndarray,
    val_y: np.ndarray | None,
    *,
    val_size: int,
    seed: int,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
    val_from: str = "train",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick train/val/test indices: validation held out of train unless ``val_y`` is given.

    Each purpose draws from its own child of ``seed``, so e.g. ``max_test`` never changes
    which images form the validation split, and a smaller ``max_val`` gives a subset of the
    larger one. Returned orders are shuffled.

    With ``val_from="test"`` (and no ``val_y``), validation is ``val_size`` images of the
    first of the :func:`halve_test_split` and the test split is the second half; training
    keeps every training image.

    Returns:
        ``(train_idx, val_idx, test_idx)``; ``val_idx`` indexes ``val_y`` when given, else
        ``test_y`` when ``val_from="test"``, else ``train_y``.
    """
    max_train = check_limit(max_train, "max_train")
    max_val = check_limit(max_val, "max_val")
    max_test = check_limit(max_test, "max_test")
    check_val_from(val_from)
    rng_val, rng_train, rng_test, rng_order = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)
    )
    all_train = np.arange(len(train_y))
    test_pool = np.arange(len(test_y))
    if val_y is not None:
        val_idx, train_idx = np.arange(len(val_y)), all_train
    elif val_from == "test":
        val_pool, test_pool = halve_test_split(test_y)
        if check_limit(val_size, "val_size") is None or val_size > len(val_pool):
            raise DataError(
                f"val_size={val_size!r} must be a positive int no larger than the "
                f"{len(val_pool)} images of the test split's validation half (val_from='test')"
            )
        val_idx = val_pool[stratified_sample(test_y[val_pool], val_size, rng_val)]
        train_idx = all_train
    else:
        if check_limit(val_size, "val_size") is None or val_size >= len(train_y):
            raise DataError(
                f"val_size={val_size!r} must be a positive int smaller than the "
                f"{len(train_y)} training images it is held out of"
            )
        val_idx = stratified_sample(train_y, val_size, rng_val)
        train_idx = np.setdiff1d(all_train, val_idx)

    def limit(idx: np.ndarray, labels: np.ndarray, cap: int | None, rng) -> np.ndarray:
        if cap is None or cap >= len(idx):
            return idx
        return idx[stratified_sample(labels[idx], cap, rng)]

    # Shuffle the val pool before the cap so that a smaller max_val is a prefix-subset.
    val_idx = rng_order.permutation(val_idx)
    if max_val is not None:
        val_idx = val_idx[:max_val]
    train_idx = rng_order.permutation(limit(train_idx, train_y, max_train, rng_train))
    test_idx = rng_order.permutation(limit(test_pool, test_y, max_test, rng_test))
    return train_idx, val_idx, test_idx


def check_norm(mean: Sequence[float], std: Sequence[float], channels: int) -> tuple:
    """Validate per-channel mean/std (a single value is broadcast)."""
    mean_t = tuple(float(m) for m in mean)
    std_t = tuple(float(s) for s in std)
    if len(mean_t) == 1:
        mean_t *= channels
    if len(std_t) == 1:
        std_t *= channels
    if len(mean_t) != channels or len(std_t) != channels:
        raise DataError(
            f"mean={tuple(mean)} and std={tuple(std)} must have one value per channel "
            f"({channels}) or a single value"
        )
    if any(s <= 0 for s in std_t):
        raise DataError(f"std={tuple(std)} must be positive")
    return mean_t, std_t


def to_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NHWC images -> float32 NCHW in [0, 1], then normalised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


def labels_tensor(labels: np.ndarray) -> torch.Tensor:
    """Labels as a fresh int64 tensor."""
    return torch.as_tensor(np.asarray(labels, dtype=np.int64).copy())


def build_splits(
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    indices: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: Sequence[str],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    val_from: str = "train",
) -> DataSplits:
    """Turn uint8 NHWC arrays plus chosen indices into normalised splits.

    ``val_idx`` indexes ``images["val"]`` when there is one, else the split named by
    ``val_from`` (as :func:`choose_indices` chose it).
    """
    train_idx, val_idx, test_idx = indices
    val_src = "val" if "val" in images else check_val_from(val_from)
    picked = {
        "train": (images["train"][train_idx], labels["train"][train_idx]),
        "val": (images[val_src][val_idx], labels[val_src][val_idx]),
        "test": (images["test"][test_idx], labels["test"][test_idx]),
    }
    channels = picked["train"][0].shape[-1]
    if mean is None or std is None:  # statistics of the training images actually used
        px = picked["train"][0].reshape(-1, channels).astype(np.float64) / 255.0
        mean = mean if mean is not None else tuple(px.mean(0))
        std = std if std is not None else tuple(np.maximum(px.std(0), 1e-6))
    mean_t, std_t = check_norm(mean, std, channels)
    splits = {
        k: Split(to_tensor(x, mean_t, std_t), labels_tensor(y)) for k, (x, y) in picked.items()
    }
    return DataSplits(**splits, classes=tuple(classes), mean=mean_t, std=std_t)
