"""CNN architectures for pruning experiments, a name registry and checkpoint helpers.

Importing this package never needs torchvision; ``get_model("torchvision/<name>")``
imports it only when asked.
"""

from __future__ import annotations

from prune_gym.models.checkpoints import (
    KNOWN_CHECKPOINTS,
    download_checkpoint,
    file_sha256,
    load_checkpoint,
    verify_sha256,
)
from prune_gym.models.cifar_resnet import (
    BasicBlock,
    CifarResNet,
    PadShortcut,
    resnet20,
    resnet32,
    resnet44,
    resnet56,
    resnet110,
)
from prune_gym.models.mobilenetv2 import InvertedResidual, MobileNetV2, mobilenetv2
from prune_gym.models.registry import TORCHVISION_PREFIX, get_model, list_models
from prune_gym.models.small_cnn import DigitsCNN, digits_cnn
from prune_gym.models.small_resnet import DigitsResNet, ProjectionBlock, digits_resnet
from prune_gym.models.vgg import VGG, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn

__all__ = [
    "KNOWN_CHECKPOINTS",
    "TORCHVISION_PREFIX",
    "VGG",
    "BasicBlock",
    "CifarResNet",
    "DigitsCNN",
    "DigitsResNet",
    "InvertedResidual",
    "MobileNetV2",
    "PadShortcut",
    "ProjectionBlock",
    "digits_cnn",
    "digits_resnet",
    "download_checkpoint",
    "file_sha256",
    "get_model",
    "list_models",
    "load_checkpoint",
    "mobilenetv2",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "verify_sha256",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
]
