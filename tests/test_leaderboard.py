"""The leaderboard: its tables are built from the committed submissions, and every committed
row reproduces under ``prune-gym validate`` (CI replays them all)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from agents.cli import main
from prune_gym.errors import DataError
from tests.shared_data import SHARED_DATA, has_shared

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("leaderboard_build",
                                              ROOT / "leaderboard" / "build.py")
board = importlib.util.module_from_spec(spec)
spec.loader.exec_module(board)

SUBMISSIONS = sorted(p for p in (ROOT / "leaderboard" / "entries").glob("*@*/*") if p.is_dir())
NEEDS = {"cifar10-resnet20": ("resnet20-cifar10-akamaster.th", "cifar10-jpg.tar.gz"),
         "cifar10-resnet56": ("resnet56-cifar10-akamaster.th", "cifar10-jpg.tar.gz")}


def test_tables_are_current() -> None:
    assert board.build(check=True), "leaderboard/README.md is stale: run leaderboard/build.py"


def test_there_are_entries_for_the_embedded_tasks() -> None:
    configs = {p.parent.name for p in SUBMISSIONS}
    assert {"digits-cnn-v1@0.5", "digits-resnet-v1@0.5"} <= configs


@pytest.mark.parametrize("folder", SUBMISSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_committed_row_reproduces(folder, monkeypatch, capsys) -> None:
    for prefix, files in NEEDS.items():
        if folder.parent.name.startswith(prefix) and not has_shared(*files):
            pytest.skip(f"{', '.join(files)} absent from {SHARED_DATA}")
    monkeypatch.setenv("PRUNE_GYM_DATA", str(SHARED_DATA))
    board.check_submission(folder)
    task = folder.parent.name.split("@")[0]
    assert main(["validate", str(folder / "results.csv"), "--task", task]) == 0, \
        capsys.readouterr().out


def test_a_bad_submission_is_named(tmp_path) -> None:
    source = next(p for p in SUBMISSIONS if p.parent.name == "digits-cnn-v1@0.5")
    folder = tmp_path / "digits-cnn-v1@0.5" / "mine"
    shutil.copytree(source, folder)
    meta = json.loads((folder / "submission.json").read_text())
    board.check_submission(folder)
    (folder / "submission.json").write_text(json.dumps({**meta, "code": ""}))
    with pytest.raises(DataError, match="'code' must be a non-empty"):
        board.check_submission(folder)
    (folder / "submission.json").write_text(json.dumps(meta))
    other = tmp_path / "digits-resnet-v1@0.5" / "mine"
    shutil.copytree(folder, other)
    with pytest.raises(DataError, match="each folder holds one task and budget"):
        board.check_submission(other)
    (folder / "results.csv").unlink()
    with pytest.raises(DataError, match="results.csv is missing"):
        board.check_submission(folder)
