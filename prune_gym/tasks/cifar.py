"""The CIFAR-10 tasks: reference ResNet checkpoints on CIFAR-10, in two data versions.

A task name fixes its data and its split, so each is a version, and every version is kept:

- ``cifar10-resnet{20,56}-v2``: the JPEG export ``cifar10-jpg.tar.gz`` (lossy: the
  reference weights score about ten points below their published accuracy on it), with
  validation drawn from one fixed half of the test split and the other half as the test
  split. The standard version of the JPEG tasks.
- ``cifar10-resnet{20,56}-v1``: the standard ``cifar-10-python.tar.gz`` (what torchvision
  downloads), fetched with ``download=True`` and checked by sha256, with validation drawn
  by default from one fixed half of the test split.
- ``cifar10-resnet{20,56}-v0``: the JPEG export with validation held out of train, as
  first released (kept so its results stay readable; see below for why it flatters).

Why v1 and v2 validate on half of the test split: the reference checkpoints were trained on all
50,000 training images, so a validation split held out of train was seen in training and
flatters every pruned network (ResNet-20 on the JPEG export: 84.5 % on such a split,
81.0 % on test). Selecting and rewarding on images the weights never saw, and reporting on
the other half, which nothing selects on, keeps benchmark numbers honest. ``val_from=
"train"`` is still offered, e.g. for BatchNorm statistics that should match training.

Nothing is downloaded unless ``download=True`` is passed; files are looked up in this
order: the ``weights=``/``archive=`` arguments, the data folder (``data_dir=`` or
``$PRUNE_GYM_DATA``), then ``<cache>/downloads/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prune_gym.cost import check_budget
from prune_gym.data import (
    CIFAR10_PYTHON,
    default_cache_dir,
    download_file,
    file_sha256,
    load_cifar10_jpeg,
    load_cifar_pickle,
)
from prune_gym.errors import CheckpointError, DataError, PruneGymError, TaskError
from prune_gym.models import KNOWN_CHECKPOINTS, load_checkpoint, resnet20, resnet56
from prune_gym.tasks.base import Task

__all__ = ["CIFAR10_JPEG_ARCHIVE", "DATA_ENV", "cifar10_jpeg_task", "cifar10_python_task"]

DATA_ENV = "PRUNE_GYM_DATA"
CIFAR10_JPEG_ARCHIVE = "cifar10-jpg.tar.gz"
_BUILDERS = {20: resnet20, 56: resnet56}
# Measured on the JPEG export (v0) with the reference ResNet-20: held-out-of-train vs test.
_SEEN_NOTE = ("the reference weights were trained on all 50,000 training images, so a "
              "validation split held out of train was seen in training and flatters accuracy "
              "(ResNet-20 on the JPEG export: 84.5 % there, 81.0 % on test)")


def _data_folder(data_dir: str | os.PathLike | None) -> Path | None:
    """The data folder from ``data_dir`` or ``$PRUNE_GYM_DATA`` (None if neither is set)."""
    folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskError(f"data folder {str(folder)!r} (from "
                        f"{'data_dir' if data_dir is not None else '$' + DATA_ENV}) "
                        "does not exist")
    return folder


def _resolve(
    explicit: str | os.PathLike | None, data_dir: Path | None, filename: str, arg: str,
    hint: str,
) -> tuple[Path | None, str | None]:
    """A file path from an argument or from the data folder, or the reason it is missing."""
    if explicit is not None:
        path = Path(explicit)
        return (path, None) if path.is_file() else (None, f"{arg}={str(path)!r} does not exist")
    if data_dir is None:
        return None, (f"{arg}: not given and ${DATA_ENV} is not set; pass {arg}='.../{filename}'"
                      f" or set {DATA_ENV} to a folder holding {filename}{hint}")
    path = data_dir / filename
    if not path.is_file():
        return None, (f"{arg}: {filename} is not in data folder {str(data_dir)!r}; put it there "
                      f"or pass {arg}='.../{filename}'{hint}")
    return path, None


def _val_note(n_val: int, n_test: int, val_from: str) -> str:
    if val_from == "test":
        return (f"validation = {n_val} images from one fixed half of the test split (never "
                f"seen in training); test = the other half ({n_test} images)")
    return f"validation = {n_val} images held out of train ({_SEEN_NOTE})"


def cifar10_jpeg_task(name: str, depth: int, val_from: str = "train") -> Callable[..., Task]:
    """The factory of a JPEG task (``-v0``: ``val_from="train"``, ``-v2``: ``"test"``)."""
    builder = _BUILDERS[depth]
    default_val_from = val_from
    key = f"resnet{depth}-cifar10-akamaster"
    known = KNOWN_CHECKPOINTS[key]

    def factory(
        *, data_dir: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
        archive: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
        val_size: int = 1000, seed: int = 0, max_train: int | None = None,
        max_val: int | None = None, max_test: int | None = None, budget: float = 0.5,
        val_from: str | None = None,
    ) -> Task:
        """Reference ResNet on CIFAR-10 JPEG.

        ``data_dir`` (or ``$PRUNE_GYM_DATA``) holds the weights and ``cifar10-jpg.tar.gz``;
        ``weights=``/``archive=`` point at them directly. The JPEG archive is decoded once
        into ``cache_dir``. The full training split is ~600 MB as float32: pass
        ``max_train`` if only a subset is needed. ``val_from`` defaults to what the version
        means (``-v2``: ``"test"``, half of the test split, see the module docstring;
        ``-v0``: ``"train"``, held out of train).
        """
        budget = check_budget(budget)
        if val_from is None:
            val_from = default_val_from
        folder = _data_folder(data_dir)
        w_hint = (f" (or use cifar10-resnet{depth}-v1 with download=True, which fetches it "
                  f"from {known['url']})")
        w_path, w_err = _resolve(weights, folder, known["filename"], "weights", w_hint)
        a_path, a_err = _resolve(archive, folder, CIFAR10_JPEG_ARCHIVE, "archive",
                                 " (CIFAR-10 as JPEG image folders: "
                                 "cifar10-jpg/{train,test}/<class>/*.jpg; for the standard "
                                 f"{CIFAR10_PYTHON['filename']} use cifar10-resnet{depth}-v1)")
        missing = [e for e in (w_err, a_err) if e]
        if missing:
            raise TaskError(f"task {name!r} cannot be built: " + "; ".join(missing))
        model = load_checkpoint(builder(num_classes=10), w_path).eval()
        sha = file_sha256(w_path)
        data = load_cifar10_jpeg(a_path, cache_dir, val_size=val_size, seed=seed,
                                 max_train=max_train, max_val=max_val, max_test=max_test,
                                 val_from=val_from)
        return Task(
            name=name,
            model=model,
            data=data,
            example_inputs=data.val.x[:1].clone(),
            budget=budget,
            num_classes=10,
            description=(f"ResNet-{depth} (akamaster reference weights) on CIFAR-10 JPEG; "
                         + _val_note(len(data.val), len(data.test), val_from) + "."),
            metadata={"weights": str(w_path), "archive": str(a_path), "seed": seed,
                      "weights_sha256": sha, "reference_weights": sha == known["sha256"],
                      "val_from": val_from},
        )

    factory.__name__ = "_" + name.replace("-", "_")
    return factory


def _locate(
    explicit: str | os.PathLike | None, folder: Path | None, downloads: Path, known: dict,
    arg: str, error: type[PruneGymError], download: bool,
) -> tuple[Path | None, str | None, str | None]:
    """``(path, sha256 if verified, reason it is missing)`` of a reference file.

    A file found by its reference name (in the data folder or the download cache) must
    be the reference file: a wrong sha256 there is an ``error``, not a silent substitute.
    An explicit path may be any file (the task records whether it is the reference one).
    """
    filename, url, expected = known["filename"], known["url"], known["sha256"]
    if explicit is not None:
        path = Path(explicit)
        return (path, None, None) if path.is_file() else (
            None, None, f"{arg}={str(path)!r} does not exist")
    for candidate in ([folder / filename] if folder is not None else []) + [downloads / filename]:
        if candidate.is_file():
            sha = file_sha256(candidate)
            if sha != expected:
                raise error(f"{arg}: {str(candidate)!r} has sha256 {sha}, not the reference "
                            f"{expected}; it is corrupt, truncated or another file: delete "
                            f"it (download=True fetches it again from {url})")
            return candidate, sha, None
    if download:
        return download_file(url, downloads / filename, expected, error=error), expected, None
    places = (f"in neither data folder {str(folder)!r} nor cache folder {str(downloads)!r}"
              if folder is not None else
              f"not in cache folder {str(downloads)!r} (and ${DATA_ENV} is not set)")
    return None, None, (f"{arg}: {filename} is {places}; pass download=True to "
                        f"fetch it, or download {url} (sha256 {expected[:12]}...) by hand "
                        f"and put it in {str(downloads)!r}, or pass {arg}='.../{filename}'")


def cifar10_python_task(name: str, depth: int) -> Callable[..., Task]:
    """The factory of ``cifar10-resnet{depth}-v1`` (standard CIFAR-10, ``download=True``)."""
    builder = _BUILDERS[depth]
    known_w = KNOWN_CHECKPOINTS[f"resnet{depth}-cifar10-akamaster"]

    def factory(
        *, data_dir: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
        archive: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
        download: bool = False, val_from: str = "test", val_size: int = 1000, seed: int = 0,
        max_train: int | None = None, max_val: int | None = None,
        max_test: int | None = None, budget: float = 0.5,
    ) -> Task:
        """Reference ResNet on the standard CIFAR-10 (``cifar-10-python.tar.gz``).

        Files come from ``weights=``/``archive=``, else the data folder (``data_dir`` or
        ``$PRUNE_GYM_DATA``), else ``<cache_dir>/downloads/``; ``download=True`` fetches
        what is missing into the latter, checked by sha256. Validation is by default
        ``val_size`` images of one fixed half of the test split, and the test split the
        other half (``val_from="train"`` holds validation out of train instead, images
        the weights were trained on).
        """
        budget = check_budget(budget)
        if not isinstance(download, bool):
            raise TaskError(f"download={download!r} must be True or False")
        folder = _data_folder(data_dir)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        downloads = root / "downloads"
        # Read the reference entries now, not at import: mirrors (and tests) may change them.
        w_path, w_sha, w_err = _locate(weights, folder, downloads, known_w, "weights",
                                       CheckpointError, download)
        a_path, a_sha, a_err = _locate(archive, folder, downloads, CIFAR10_PYTHON, "archive",
                                       DataError, download)
        missing = [e for e in (w_err, a_err) if e]
        if missing:
            raise TaskError(f"task {name!r} cannot be built: " + "; ".join(missing))
        model = load_checkpoint(builder(num_classes=10), w_path).eval()
        w_sha = w_sha or file_sha256(w_path)
        a_sha = a_sha or file_sha256(a_path)
        data = load_cifar_pickle(a_path, val_size=val_size, seed=seed, max_train=max_train,
                                 max_val=max_val, max_test=max_test, val_from=val_from)
        if data.num_classes != 10:
            raise DataError(f"archive={str(a_path)!r} holds {data.num_classes} classes; "
                            f"{name} needs CIFAR-10 ({CIFAR10_PYTHON['filename']})")
        return Task(
            name=name,
            model=model,
            data=data,
            example_inputs=data.val.x[:1].clone(),
            budget=budget,
            num_classes=10,
            description=(f"ResNet-{depth} (akamaster reference weights, trained on all 50,000 "
                         "training images) on the standard CIFAR-10; "
                         + _val_note(len(data.val), len(data.test), val_from) + "."),
            metadata={"weights": str(w_path), "archive": str(a_path), "seed": seed,
                      "weights_sha256": w_sha, "reference_weights": w_sha == known_w["sha256"],
                      "archive_sha256": a_sha,
                      "reference_data": a_sha == CIFAR10_PYTHON["sha256"],
                      "val_from": val_from},
        )

    factory.__name__ = f"_cifar10_resnet{depth}_v1"
    return factory
