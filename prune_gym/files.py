"""Files written whole or not at all: write beside the target, then rename onto it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; moved onto ``path`` when the block ends,
    removed if it raises, so a crash never leaves a half-written ``path`` (or changes the
    old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int = 1) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return write_text_atomic(json.dumps(data, indent=indent), path)
