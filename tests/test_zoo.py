"""The model zoo (timm and torchvision CNN families, random init): every architecture is
pruned exactly or refused with a reason, within a time limit, as ``docs/zoo.md`` records.

Needs timm and torchvision (the extras environment, ``make test-extras``); skipped without.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests import zoo
from tests.time_limit import time_limit

pytest.importorskip("torchvision", reason="torchvision (and timm) need the extras environment")
pytest.importorskip("timm", reason="timm is in the extras environment (make test-extras)")

RECORD = {(r["library"], r["model"]): r
          for r in json.loads(zoo.RECORD.read_text())["rows"]}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("library, name", zoo.ARCHITECTURES,
                         ids=[f"{lib}-{n}" for lib, n in zoo.ARCHITECTURES])
def test_architecture_prunes_exactly_or_is_refused_as_recorded(library, name):
    with time_limit(zoo.TIME_LIMIT):
        row = zoo.check(library, name)  # asserts the export contract itself
    recorded = RECORD[(library, name)]
    assert row["status"] == recorded["status"], row
    if row["status"] == "refused":
        assert row["reason"].split(":")[0] == recorded["reason"].split(":")[0], row
        return
    for key in ("groups", "prunable", "reasons"):
        assert row[key] == recorded[key], (key, row)
    assert row["controlled"] == pytest.approx(recorded["controlled"], abs=2e-3), row
    assert row["macs_error"] <= 0.02


def test_the_zoo_is_mostly_pruned_and_the_table_is_in_the_docs():
    rows = list(RECORD.values())
    assert len(rows) == len(zoo.ARCHITECTURES)
    pruned = [r for r in rows if r["status"] != "refused"]
    assert len(pruned) >= 0.9 * len(rows)
    page = zoo.PAGE.read_text()
    for r in rows:
        assert f"| {r['library']} | {r['model']} |" in page
    assert "zoo" in (zoo.ROOT / "docs" / "index.md").read_text()
