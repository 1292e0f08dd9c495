"""Models by name, so tasks, the CLI and configs can refer to an architecture as a string.

Names without a prefix are prune-gym's own CIFAR/digits models; ``torchvision/<name>``
builds a torchvision model, imported only when asked for, so prune-gym itself never
needs torchvision.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from prune_gym.errors import InvalidArgumentError, MissingDependencyError
from prune_gym.models.cifar_resnet import CifarResNet
from prune_gym.models.mobilenetv2 import MobileNetV2
from prune_gym.models.small_cnn import DigitsCNN
from prune_gym.models.small_resnet import DigitsResNet
from prune_gym.models.vgg import VGG

__all__ = ["TORCHVISION_PREFIX", "get_model", "list_models"]

TORCHVISION_PREFIX = "torchvision/"

# name -> (class, fixed constructor arguments)
_MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    **{f"resnet{d}": (CifarResNet, {"depth": d}) for d in (20, 32, 44, 56, 110)},
    **{f"vgg{d}_bn": (VGG, {"depth": d}) for d in (11, 13, 16, 19)},
    "mobilenetv2": (MobileNetV2, {}),
    "digits_cnn": (DigitsCNN, {}),
    "digits_resnet": (DigitsResNet, {}),
}


def list_models() -> list[str]:
    """Names accepted by :func:`get_model` (without the ``torchvision/`` ones)."""
    return sorted(_MODELS)


def _check_kwargs(name: str, cls: type[nn.Module], fixed: dict[str, Any], kw: dict) -> None:
    # Report a misspelt keyword as our error, naming what would have been accepted.
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "num_classes"}
    accepted -= set(fixed)
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise InvalidArgumentError(
            f"get_model({name!r}) got unknown keyword argument(s) {unknown}; "
            f"accepted: {sorted(accepted)}"
        )


def _torchvision_model(name: str, num_classes: int, kw: dict) -> nn.Module:
    try:
        tv_models = importlib.import_module("torchvision.models")
    except ImportError as exc:
        raise MissingDependencyError(
            f"get_model({TORCHVISION_PREFIX + name!r}) needs torchvision, which is not "
            "installed; install it with `pip install torchvision` (or `pip install "
            "prune-gym[vision]`), or use one of the built-in models: "
            f"{', '.join(list_models())}"
        ) from exc
    known = sorted(tv_models.list_models())
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise InvalidArgumentError(
            f"name={TORCHVISION_PREFIX + name!r} is not a torchvision model"
            + (f"; did you mean {close}?" if close else "")
            + " (see torchvision.models.list_models())"
        )
    return tv_models.get_model(name, num_classes=num_classes, **kw)


def get_model(name: str, num_classes: int = 10, **kw) -> nn.Module:
    """Build a freshly initialised model by name.

    Args:
        name: One of :func:`list_models`, or ``"torchvision/<name>"`` for a torchvision
            model (needs torchvision; ``weights=`` etc. are passed through).
        num_classes: Size of the output layer.
        **kw: Architecture options (e.g. ``width_mult`` for MobileNetV2, ``in_channels``).

    Returns:
        A new ``nn.Module`` in training mode.

    Raises:
        InvalidArgumentError: Unknown name or keyword.
        MissingDependencyError: A ``torchvision/`` name was asked for but torchvision is absent.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"name must be a string such as 'resnet20', got {name!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise InvalidArgumentError(f"num_classes={num_classes!r} must be a positive int")
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX):], num_classes, kw)
    key = name.lower().replace("-", "_")
    if key not in _MODELS:
        close = difflib.get_close_matches(key, list(_MODELS), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise InvalidArgumentError(
            f"name={name!r} is not a known model{hint} Known models: {', '.join(list_models())}"
            f", or '{TORCHVISION_PREFIX}<name>' for torchvision models"
        )
    cls, fixed = _MODELS[key]
    _check_kwargs(name, cls, fixed, kw)
    return cls(num_classes=num_classes, **fixed, **kw)
