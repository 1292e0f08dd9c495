"""Data for pruning: tensors split into train / validation / test.

Every loader returns :class:`DataSplits`; the validation split is what environments
evaluate and reward on, so it never overlaps the test split. By default it is held out
of the training data; for models trained on every training image (the CIFAR reference
checkpoints), ``val_from="test"`` draws it from one fixed half of the test split and
reports on the other half instead.
"""

from __future__ import annotations

from prune_gym.data.archives import CIFAR10_PYTHON, load_cifar_pickle, load_torchvision_dataset
from prune_gym.data.digits import load_digits
from prune_gym.data.download import download_file, file_sha256
from prune_gym.data.images import load_cifar10_jpeg, load_image_folder, prepare_cifar10_jpeg
from prune_gym.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VAL_SOURCES,
    DataSplits,
    Split,
    default_cache_dir,
    halve_test_split,
)

__all__ = [
    "CIFAR10_PYTHON",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VAL_SOURCES",
    "DataSplits",
    "Split",
    "default_cache_dir",
    "download_file",
    "file_sha256",
    "load_cifar10_jpeg",
    "load_cifar_pickle",
    "load_digits",
    "load_image_folder",
    "load_torchvision_dataset",
    "prepare_cifar10_jpeg",
    "halve_test_split",
]
