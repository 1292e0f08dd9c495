"""Where the optional reference data lives (``../shared/data``), and a skip marker for tests
that need it. A plain module, so test files import it instead of ``conftest``."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESNET20_CKPT = SHARED_DATA / "resnet20-cifar10-akamaster.th"
RESNET56_CKPT = SHARED_DATA / "resnet56-cifar10-akamaster.th"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpg.tar.gz"


def has_shared(*names: str) -> bool:
    """True when every named file exists in the reference data folder."""
    return all((SHARED_DATA / n).is_file() for n in names)


def needs_shared(*names: str) -> pytest.MarkDecorator:
    """Skip unless the named reference files are present (and mark as ``shared_data``)."""
    present = SHARED_DATA.is_dir() and has_shared(*names)
    return pytest.mark.skipif(
        not present, reason=f"reference data {', '.join(names) or ''} absent from {SHARED_DATA}"
    )
