"""Loading and fetching weights safely.

Checkpoints are read with ``weights_only=True`` (no arbitrary code from a pickle), every
key and shape is checked *before* anything is copied into the model (so a failed load
leaves the model untouched), and downloads are verified against a sha256 before they
are moved into place (so a half-written or tampered file is never used).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_gym.data.download import check_sha256_arg, download_file, file_sha256
from prune_gym.errors import CheckpointError, InvalidArgumentError

__all__ = [
    "KNOWN_CHECKPOINTS",
    "download_checkpoint",
    "file_sha256",
    "load_checkpoint",
    "load_state_dict_file",
    "verify_sha256",
]

# Public reference checkpoints (Idelbayev, "proper ResNet for CIFAR", BSD-2). The file names
# upstream carry the sha256 prefix; the full digests were computed from the files.
KNOWN_CHECKPOINTS: dict[str, dict[str, str]] = {
    "resnet20-cifar10-akamaster": {
        "url": "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/"
        "pretrained_models/resnet20-12fca82f.th",
        "sha256": "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8",
        "filename": "resnet20-cifar10-akamaster.th",
    },
    "resnet56-cifar10-akamaster": {
        "url": "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/"
        "pretrained_models/resnet56-4bfd9763.th",
        "sha256": "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367",
        "filename": "resnet56-cifar10-akamaster.th",
    },
}

# Wrappers that prefix parameter names: DataParallel/DDP and torch.compile.
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 5  # how many offending keys an error message lists


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOW else "")


def load_state_dict_file(path: str | os.PathLike) -> Mapping[str, Any]:
    """Read a checkpoint file with ``weights_only=True``, as a CheckpointError on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint path {str(path)!r} does not exist or is not a file; "
            "pass the path of a .pt/.pth/.th file saved with torch.save"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs arbitrary code
        raise CheckpointError(
            f"checkpoint {str(path)!r} could not be read with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "it must be a torch.save'd state dict (or a dict with a 'state_dict' entry)"
        ) from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(obj).__name__}, not a dict; "
            "save model.state_dict() (not the model object)"
        )
    return obj


def _extract_state(obj: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """Return a new, prefix-free state dict (the caller's mapping is not modified)."""
    state = obj["state_dict"] if "state_dict" in obj else obj
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{where}: the 'state_dict' entry is a {type(state).__name__}, not a dict"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{where}: entry {key!r} is a {type(value).__name__}; a state dict maps "
                "parameter names (str) to tensors (did you pass a full training checkpoint? "
                "put the weights under 'state_dict')"
            )
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value
    if not out:
        raise CheckpointError(f"{where}: the state dict is empty")
    return out


def load_checkpoint(
    model: nn.Module, path_or_state: str | os.PathLike | Mapping[str, Any]
) -> nn.Module:
    """Load weights into ``model`` after checking that every key and shape matches.

    Accepts the akamaster format (``{"state_dict": {"module.conv1.weight": ...}, ...}``),
    any dict with a ``state_dict`` entry, or a bare state dict; ``module.`` and
    ``_orig_mod.`` prefixes are stripped. BatchNorm ``num_batches_tracked`` buffers may be
    absent (old checkpoints lack them). Nothing is copied unless everything matches.

    Args:
        model: The module to fill (loaded in place, like ``load_state_dict``).
        path_or_state: A checkpoint file path, or an already loaded mapping (not modified).

    Returns:
        ``model``, for chaining.

    Raises:
        CheckpointError: Missing file, unreadable file, or key/shape mismatch.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(path_or_state, Mapping):
        where, obj = "checkpoint (mapping)", path_or_state
    elif isinstance(path_or_state, (str, os.PathLike)):
        where, obj = f"checkpoint {str(path_or_state)!r}", load_state_dict_file(path_or_state)
    else:
        raise CheckpointError(
            f"path_or_state must be a file path or a state dict, got {type(path_or_state).__name__}"
        )
    state = _extract_state(obj, where)
    expected = model.state_dict()
    missing = [
        k for k in expected if k not in state and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_few(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{where} does not match {type(model).__name__}: " + "; ".join(problems)
            + ". Build the architecture the checkpoint was saved from (e.g. the right depth "
            "and num_classes)"
        )
    model.load_state_dict(state, strict=False)
    return model


def verify_sha256(path: str | os.PathLike, sha256: str) -> str:
    """Check that ``path`` has the given sha256 (full digest or a prefix of >= 8 hex chars).

    Returns:
        The full hex digest of the file.

    Raises:
        CheckpointError: The file is missing or its digest differs.
    """
    expected = check_sha256_arg(sha256)
    if not Path(path).is_file():
        raise CheckpointError(f"cannot verify {str(path)!r}: no such file")
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise CheckpointError(
            f"sha256 mismatch for {str(path)!r}: expected {expected}, got {actual}; "
            "the file is corrupt, incomplete or not the one you meant: delete it and download again"
        )
    return actual


def download_checkpoint(
    url: str, dest: str | os.PathLike, sha256: str, *, timeout: float = 60.0
) -> Path:
    """Download ``url`` to ``dest`` unless a verified copy is already there.

    The file is written to a temporary name beside ``dest`` and moved into place only
    after its sha256 matches, so an interrupted or tampered download never leaves a file
    that looks usable. ``file://`` URLs work too (useful for mirrors and tests).

    Raises:
        CheckpointError: The download failed or the digest does not match.
    """
    return download_file(url, dest, sha256, error=CheckpointError, timeout=timeout)
