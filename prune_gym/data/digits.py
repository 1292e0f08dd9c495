"""The embedded data set: scikit-learn's 8x8 handwritten digits (1,797 images, no download).

It is what lets prune-gym run end to end (tests, tutorials, the CLI's default task) on any
machine in seconds.
"""

from __future__ import annotations

import numpy as np
import torch

from prune_gym.data.splits import DataSplits, Split
from prune_gym.errors import DataError

__all__ = ["load_digits"]


def load_digits(
    seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.2
) -> DataSplits:
    """sklearn digits as 1x8x8 images, split into stratified train/val/test.

    Pixels are scaled to [0, 1], then normalised with the mean and std of the training
    split (recorded in the result). The validation split is held out of the training data.

    Args:
        seed: Seed of the split; the same seed gives the same split.
        val_fraction: Fraction of all images used for validation.
        test_fraction: Fraction of all images used for the test split.

    Raises:
        DataError: Fractions outside (0, 1) or summing to 1 or more.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < float(value) < 1.0:
            raise DataError(f"{name}={value!r} must lie strictly between 0 and 1 (e.g. 0.2)")
    if val_fraction + test_fraction >= 0.9:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:.2f} leaves too little "
            "training data; keep the sum below 0.9"
        )
    bunch = sk_load_digits()
    images = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    n = len(labels)
    n_test = round(test_fraction * n)
    n_val = round(val_fraction * n)
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=n_test, stratify=labels, random_state=seed
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=n_val, stratify=rest_y, random_state=seed + 1
    )
    mean, std = float(train_x.mean()), float(train_x.std())

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy((x - mean) / std), torch.from_numpy(y.copy()))

    return DataSplits(
        train=split(train_x, train_y),
        val=split(val_x, val_y),
        test=split(test_x, test_y),
        classes=tuple(str(c) for c in bunch.target_names),
        mean=(mean,),
        std=(std,),
    )
