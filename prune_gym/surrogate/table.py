"""Tables of evaluated keep states: one CSV and one JSON manifest per task, checked by sha256.

A table is what NAS-Bench-201/301 published for architecture search, for pruning: keep states
of one task's network, each scored exactly as the environments score an episode's end
(BatchNorm recalibrated, the task's validation split), with its test accuracy, MACs and
params beside it. Surrogate evaluators are fitted on it (:mod:`prune_gym.surrogate.model`).

The CSV has one row per state and a column per group's kept count (``k0``, ``k1``, ...); a
state chosen by channel index (ChannelMask-v0's) adds its kept channels as a hex bitmask
(``mask``: the groups' masks concatenated in group order, ``numpy.packbits`` order). The
manifest says what the rows mean (the task, its groups and their sizes, the evaluator's
settings, the sampling mixture, the machine and command that made them) and holds the
sha256 of the CSV, so that a table is refused if a byte of it changed. A table grows by
appending rows (the generator is resumable); a changed network, split or evaluator is a new
table version.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prune_gym.errors import DataError

__all__ = ["FORMAT", "NUMERIC_COLUMNS", "TABLES_DIR", "StateTable", "load_table", "table_paths"]

FORMAT = "prune-gym-state-table/1"
TABLES_DIR = Path(__file__).resolve().parent / "tables"
# Per-row columns before the kept counts (k0..kN) and the optional mask.
NUMERIC_COLUMNS = ("index", "rounded", "target", "macs", "params", "macs_ratio",
                   "params_ratio", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
                   "seconds", "finetuned_val_accuracy", "finetuned_test_accuracy")
_HEAD = ("index", "source", *NUMERIC_COLUMNS[1:])
_INT_COLUMNS = {"index", "rounded", "macs", "params"}
_OPTIONAL = {"finetuned_val_accuracy", "finetuned_test_accuracy"}


def table_paths(task: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """``(csv, manifest)`` paths of ``task``'s table in ``folder`` (default: the package's)."""
    folder = Path(folder) if folder is not None else TABLES_DIR
    return folder / f"{task}.csv", folder / f"{task}.json"


def header(groups: int) -> list[str]:
    """The CSV header of a table for a network with ``groups`` prunable groups."""
    return [*_HEAD, *(f"k{i}" for i in range(groups)), "mask"]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class StateTable:
    """A loaded table: its manifest, the kept counts, optional masks and every score column.

    Attributes:
        manifest: The JSON manifest (task, groups, evaluator, mixture, provenance).
        counts: ``(rows, groups)`` int array of kept channels per group.
        masks: Per row, the kept-channel bitmask as bytes, or ``None`` where the state keeps
            the most important channels of each group (counts alone).
        sources: Per row, the name of the sampler that drew it.
        columns: Every numeric column by name (``val_accuracy``, ``macs_ratio``, ...), as
            float arrays (NaN where a row has no value, e.g. fine-tuned accuracy).
    """

    manifest: dict
    counts: np.ndarray
    masks: list[bytes | None]
    sources: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def group_sizes(self) -> list[int]:
        return [int(size) for _, size in self.manifest["groups"]]

    def unpack_mask(self, row: int) -> list[np.ndarray] | None:
        """The per-group boolean masks of ``row``, or None for a counts-only state."""
        blob = self.masks[row]
        if blob is None:
            return None
        total = sum(self.group_sizes)
        bits = np.unpackbits(np.frombuffer(blob, dtype=np.uint8))[:total].astype(bool)
        return np.split(bits, np.cumsum(self.group_sizes)[:-1])


def pack_masks(masks: Sequence[np.ndarray]) -> str:
    """Hex of the concatenated boolean masks (the ``mask`` column)."""
    return np.packbits(np.concatenate([np.asarray(m, dtype=bool) for m in masks])).tobytes().hex()


def load_table(task: str, folder: str | Path | None = None, *, verify: bool = True
               ) -> StateTable:
    """Read ``task``'s table; with ``verify``, refuse it unless its sha256 is the manifest's.

    Raises:
        DataError: No table for ``task``, a sha256 mismatch, or a malformed row (named).
    """
    csv_path, manifest_path = table_paths(task, folder)
    if not manifest_path.is_file() or not csv_path.is_file():
        known = sorted(p.stem for p in csv_path.parent.glob("*.json"))
        raise DataError(f"task={task!r} has no state table in {str(csv_path.parent)!r}; tables "
                        f"exist for: {', '.join(known) or 'none'}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(manifest_path)!r} is not a readable JSON manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{str(manifest_path)!r} is not a state-table manifest (format "
                        f"{FORMAT!r} expected)")
    raw = csv_path.read_bytes()
    if verify:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != manifest.get("sha256"):
            raise DataError(f"{str(csv_path)!r} has sha256 {actual}, but its manifest records "
                            f"{manifest.get('sha256')}: the table was changed or is incomplete; "
                            "restore it (git checkout) or regenerate its manifest")
    groups = len(manifest["groups"])
    reader = csv.reader(io.StringIO(raw.decode()))
    head = next(reader, None)
    if head != header(groups):
        raise DataError(f"{str(csv_path)!r}: header does not match a {groups}-group table")
    sizes = np.array([size for _, size in manifest["groups"]])
    counts, masks, sources = [], [], []
    numbers: dict[str, list[float]] = {c: [] for c in NUMERIC_COLUMNS}
    for line, row in enumerate(reader, start=2):
        if len(row) != len(head):
            raise DataError(f"{str(csv_path)!r} line {line}: {len(row)} fields, not {len(head)}")
        try:
            record = dict(zip(head, row, strict=True))
            for name in NUMERIC_COLUMNS:
                text = record[name]
                if text == "" and name in _OPTIONAL:
                    numbers[name].append(math.nan)
                else:
                    numbers[name].append(float(text))
            keep = np.array([int(record[f"k{i}"]) for i in range(groups)])
            mask = bytes.fromhex(record["mask"]) if record["mask"] else None
        except ValueError as exc:
            raise DataError(f"{str(csv_path)!r} line {line}: {exc}") from exc
        if (keep < 1).any() or (keep > sizes).any():
            raise DataError(f"{str(csv_path)!r} line {line}: kept counts outside [1, group size]")
        counts.append(keep)
        masks.append(mask)
        sources.append(record["source"])
    columns = {name: np.asarray(values, dtype=float) for name, values in numbers.items()}
    return StateTable(manifest=manifest, counts=np.asarray(counts, dtype=int).reshape(-1, groups),
                      masks=masks, sources=np.asarray(sources), columns=columns)


def format_row(record: dict, groups: int) -> list[str]:
    """One CSV row from a record of the columns (ints as ints, floats to 6 significant)."""
    out = []
    for name in header(groups):
        value = record.get(name)
        if value is None:
            out.append("")
        elif name in _INT_COLUMNS or name.startswith("k"):
            out.append(str(int(value)))
        elif isinstance(value, float):
            out.append(f"{value:.6g}")
        else:
            out.append(str(value))
    return out
