"""Image folders (``train/<class>/*.jpg``) and image-folder archives such as CIFAR-10 JPEG.

Decoding 60,000 small JPEGs takes several seconds, far too slow to repeat for every
environment or test, so :func:`prepare_cifar10_jpeg` extracts the archive once into a
cache folder and stores the decoded images as uint8 ``.npy`` arrays; later loads
memory-map those arrays and decode nothing. Extraction writes only regular files and
folders whose paths stay inside the cache folder, and the cache entry appears (by an
atomic rename) only once it is complete.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from prune_gym.data.download import file_sha256
from prune_gym.data.splits import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    build_splits,
    choose_indices,
    default_cache_dir,
)
from prune_gym.errors import DataError

__all__ = ["load_cifar10_jpeg", "load_image_folder", "prepare_cifar10_jpeg"]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
)
SPLIT_NAMES = ("train", "val", "test")
_COMPLETE = "COMPLETE.json"


def _decode(source, mode: str, image_size: tuple[int, int] | None, name: str) -> np.ndarray:
    """One image as uint8 HWC (resized to ``image_size`` = (H, W) when given)."""
    try:
        with Image.open(source) as im:
            im = im.convert(mode)
            if image_size is not None and im.size != (image_size[1], image_size[0]):
                im = im.resize((image_size[1], image_size[0]), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"could not decode image {name!r}: {exc}") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(arrays: list[np.ndarray], names: list[str]) -> np.ndarray:
    """Stack decoded images, insisting on one size (the model needs fixed input shapes)."""
    first = arrays[0].shape
    for arr, name in zip(arrays, names, strict=True):
        if arr.shape != first:
            raise DataError(
                f"image {name!r} has shape {arr.shape} but {names[0]!r} has {first}; "
                "all images must have one size: pass image_size=(H, W) to resize them"
            )
    return np.stack(arrays)


def _list_split(
    split_dir: Path, classes: list[str] | None, arg: str
) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths and labels of one split folder; ``classes`` None means "discover"."""
    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(
            f"{arg}: {str(split_dir)!r} has no class folders; expected {split_dir.name}/<class>/"
            "<image files>"
        )
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"{arg}: {str(split_dir)!r} has class folders {unknown} that train/ does not have; "
            f"every split must use the training classes {classes}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(
                f"{arg}: class folder {str(folder)!r} holds no images "
                f"(expected files ending in {sorted(IMAGE_EXTENSIONS)})"
            )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def load_image_folder(
    root: str | os.PathLike,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    val_size: int = 1000,
    seed: int = 0,
    max_train: int | None = None,
    max_val: int | None = None,
    max_test: int | None = None,
    image_size: tuple[int, int] | None = None,
    mode: str = "RGB",
) -> DataSplits:
    """Load ``root/{train,test}/<class>/*`` (and ``root/val/`` if present) into tensors.

    Without a ``val/`` folder a seeded, class-stratified validation subset of ``val_size``
    images is held out of ``train/``. Only the selected images are decoded, so small
    ``max_*`` values make loading fast.

    Args:
        root: Folder holding ``train/`` and ``test/``.
        mean: Per-channel mean of [0, 1] pixels; None computes it from the training images.
        std: Per-channel std; None computes it from the training images.
        val_size: Images held out of ``train/`` for validation (ignored with ``val/``).
        seed: Seed of the split and of the subsets.
        max_train: Keep at most this many training images (stratified); None keeps all.
        max_val: Keep at most this many validation images.
        max_test: Keep at most this many test images (stratified).
        image_size: (H, W) to resize every image to; None requires one common size.
        mode: PIL mode, "RGB" (3 channels) or "L" (1 channel).

    Raises:
        DataError: Missing folders, empty class folders, unreadable images, bad sizes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"root={str(root)!r} is not a folder; expected a folder holding "
                        "train/<class>/ and test/<class>/ image folders")
    for needed in ("train", "test"):
        if not (root / needed).is_dir():
            raise DataError(f"root={str(root)!r} has no {needed}/ folder; expected "
                            f"{needed}/<class>/<image files>")
    if mode not in ("RGB", "L"):
        raise DataError(f"mode={mode!r} must be 'RGB' or 'L'")
    paths, labels = {}, {}
    paths["train"], labels["train"], classes = _list_split(root / "train", None, "root")
    names = ["test"] + (["val"] if (root / "val").is_dir() else [])
    for name in names:
        paths[name], labels[name], _ = _list_split(root / name, classes, "root")
    indices = choose_indices(
        labels["train"], labels["test"], labels.get("val"), val_size=val_size, seed=seed,
        max_train=max_train, max_val=max_val, max_test=max_test,
    )
    # Decode only what was selected; keep index arrays relative to the decoded subset.
    val_src = "val" if "val" in paths else "train"
    wanted = {"train": [indices[0]], "test": [indices[2]]}
    wanted.setdefault(val_src, []).append(indices[1])
    images, sub_labels, remapped = {}, {}, {}
    for split, idx_lists in wanted.items():
        keep = np.unique(np.concatenate(idx_lists))
        position = {int(i): n for n, i in enumerate(keep)}
        arrays = [_decode(paths[split][i], mode, image_size, str(paths[split][i])) for i in keep]
        images[split] = _stack(arrays, [str(paths[split][i]) for i in keep])
        sub_labels[split] = labels[split][keep]
        remapped[split] = position
    new_idx = tuple(
        np.asarray([remapped[src][int(i)] for i in idx], dtype=np.int64)
        for src, idx in zip(("train", val_src, "test"), indices, strict=True)
    )
    return build_splits(images, sub_labels, new_idx, classes, mean, std)


def _safe_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    """The member's relative path, refusing links, devices and paths leaving the folder."""
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"archive={str(archive)!r}: member {member.name!r} is a link or special file; "
            "only regular files and folders are extracted (refusing a possibly unsafe archive)"
        )
    rel = PurePosixPath(member.name)
    if rel.is_absolute() or ".." in rel.parts or "\\" in member.name or ":" in member.name:
        raise DataError(
            f"archive={str(archive)!r}: member {member.name!r} would be written outside the "
            "extraction folder; refusing an unsafe archive"
        )
    return rel


def _extract_and_decode(archive: Path, dest: Path) -> dict[str, list[tuple[str, str, np.ndarray]]]:
    """Extract safely into ``dest`` and decode ``<split>/<class>/<image>`` members on the way."""
    records: dict[str, list[tuple[str, str, np.ndarray]]] = {s: [] for s in SPLIT_NAMES}
    dest_resolved = dest.resolve()
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"archive={str(archive)!r} is not a readable tar archive: {exc}") from exc
    with tar:
        for member in tar:
            rel = _safe_member(member, archive)
            target = dest / rel
            if not target.resolve().is_relative_to(dest_resolved):
                raise DataError(f"archive={str(archive)!r}: member {member.name!r} escapes "
                                "the extraction folder; refusing an unsafe archive")
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            data = tar.extractfile(member).read()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            parts = rel.parts
            is_image = rel.suffix.lower() in IMAGE_EXTENSIONS
            if is_image and len(parts) >= 3 and parts[-3] in SPLIT_NAMES:
                arr = _decode(io.BytesIO(data), "RGB", None, f"{archive}:{member.name}")
                records[parts[-3]].append((parts[-2], parts[-1], arr))
    return records


def prepare_cifar10_jpeg(
    archive: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Extract an image-folder archive once and cache its decoded images as ``.npy``.

    Works for any ``.tar(.gz)`` whose members are ``.../{train,test[,val]}/<class>/<image>``,
    such as ``cifar10-jpg.tar.gz``. The cache entry is keyed by the archive's sha256, so a
    changed archive is prepared again, and is renamed into place only when complete.

    Args:
        archive: Path of the archive.
        cache_dir: Where to keep the cache; default ``$PRUNE_GYM_CACHE`` or ``~/.cache/prune_gym``.

    Returns:
        The cache entry folder: ``images/`` (extracted files), ``{split}_x.npy`` (uint8
        NHWC), ``{split}_y.npy`` (int64) and ``classes.json``.

    Raises:
        DataError: Missing, unreadable or unsafe archive, or one without train/test images.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(
            f"archive={str(archive)!r} does not exist; pass the path of cifar10-jpg.tar.gz "
            "(or set PRUNE_GYM_DATA to the folder holding it)"
        )
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = archive.name.split(".")[0]
    final = root / f"{stem}-{file_sha256(archive)[:12]}"
    if (final / _COMPLETE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=root))
    try:
        records = _extract_and_decode(archive, tmp / "images")
        if not records["train"] or not records["test"]:
            raise DataError(
                f"archive={str(archive)!r} has no images under train/<class>/ and test/<class>/"
            )
        classes = sorted({cls for cls, _, _ in records["train"]})
        index = {c: i for i, c in enumerate(classes)}
        counts = {}
        for split, recs in records.items():
            if not recs:
                continue
            recs.sort(key=lambda r: (r[0], r[1]))
            extra = sorted({cls for cls, _, _ in recs} - set(classes))
            if extra:
                raise DataError(f"archive={str(archive)!r}: {split}/ has classes {extra} that "
                                "train/ lacks")
            x = _stack([r[2] for r in recs], [f"{split}/{r[0]}/{r[1]}" for r in recs])
            np.save(tmp / f"{split}_x.npy", x)
            np.save(tmp / f"{split}_y.npy", np.asarray([index[r[0]] for r in recs], np.int64))
            counts[split] = len(recs)
        (tmp / "classes.json").write_text(json.dumps(classes))
        (tmp / _COMPLETE).write_text(json.dumps({"archive": archive.name, "counts": counts}))
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / _COMPLETE).is_file():  # a stale, incomplete entry: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_cifar10_jpeg(
    archive: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
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
    """CIFAR-10 from the JPEG archive, via the decoded cache (about a second once prepared).

    The validation split is ``val_size`` images held out of train (stratified, seeded),
    or with ``val_from="test"`` drawn from one fixed half of the test split, the other
    half being the test split.
    The full training split is about 600 MB as float32: use ``max_train`` when you only
    need a subset (e.g. for BatchNorm recalibration).
    """
    entry = prepare_cifar10_jpeg(archive, cache_dir)
    classes = json.loads((entry / "classes.json").read_text())
    images = {s: np.load(entry / f"{s}_x.npy", mmap_mode="r") for s in ("train", "test")}
    labels = {s: np.load(entry / f"{s}_y.npy") for s in ("train", "test")}
    if (entry / "val_x.npy").is_file():
        images["val"] = np.load(entry / "val_x.npy", mmap_mode="r")
        labels["val"] = np.load(entry / "val_y.npy")
    indices = choose_indices(
        labels["train"], labels["test"], labels.get("val"), val_size=val_size, seed=seed,
        max_train=max_train, max_val=max_val, max_test=max_test, val_from=val_from,
    )
    return build_splits(images, labels, indices, classes, mean, std, val_from)
