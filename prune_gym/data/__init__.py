"""Data for pruning: tensors split into train / validation (held out of train) / test.

Every loader returns :class:`DataSplits`; the validation split is what environments
evaluate and reward on, so it is always carved out of the training data, never the
test split.
"""

from __future__ import annotations

from prune_gym.data.archives import load_cifar_pickle, load_torchvision_dataset
from prune_gym.data.digits import load_digits
from prune_gym.data.images import load_cifar10_jpeg, load_image_folder, prepare_cifar10_jpeg
from prune_gym.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    Split,
    default_cache_dir,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataSplits",
    "Split",
    "default_cache_dir",
    "load_cifar10_jpeg",
    "load_cifar_pickle",
    "load_digits",
    "load_image_folder",
    "load_torchvision_dataset",
    "prepare_cifar10_jpeg",
]
