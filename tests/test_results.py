"""agents.results: the results.csv schema round-trips exactly, refuses malformed files with
messages that say where, and its replay reproduces real rows and flags tampered ones."""

from __future__ import annotations

import csv

import pytest

from agents.methods import run_method
from agents.results import (
    COLUMNS,
    append_results,
    as_row,
    read_results,
    validate_results,
    write_results,
)
from prune_gym.errors import DataError, InvalidArgumentError, TaskError

TASK = "digits-cnn-v1"
VAL = 120  # validation images: enough for a real accuracy, fast to replay


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """Real rows: a heuristic's state and a search's best state."""
    return [as_row(run_method(name, TASK, budget=0.5, evaluations=4, seed=1,
                              val_samples=VAL).row())
            for name in ("global-magnitude", "random-search")]


def rewrite(path, change) -> None:
    """Apply ``change(row)`` to the raw CSV rows of ``path`` (a hand edit)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, raw = reader.fieldnames, list(reader)
    for r in raw:
        change(r)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(raw)


def test_round_trip_is_exact(tmp_path, rows) -> None:
    extra = {**rows[0], "feasible_fraction": 0.25, "note": "hand-made"}
    indices = {**rows[1], "keep": [[0, 2, 5], list(range(10)), [1]], "env_id": "ChannelMask-v0",
               "test_accuracy": 1 / 3, "finetune_steps": 7}
    path = write_results(tmp_path / "r.csv", [extra, indices])
    back = read_results(path)
    assert [r["method"] for r in back] == ["global-magnitude", "random-search"]
    for column in COLUMNS:  # floats written with repr come back bit for bit
        assert back[0][column] == rows[0][column], column
    assert back[0]["note"] == "hand-made" and back[0]["feasible_fraction"] == "0.25"
    assert back[1]["keep"] == [[0, 2, 5], list(range(10)), [1]]
    assert back[1]["test_accuracy"] == 1 / 3 and back[1]["finetune_steps"] == 7
    assert back[0]["env_id"] is None and back[0]["test_accuracy"] is None
    assert back[0]["val_samples"] == VAL and isinstance(back[0]["feasible"], bool)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:len(COLUMNS)] == list(COLUMNS) and header[len(COLUMNS):] == [
        "feasible_fraction", "note"]


def test_append_keeps_earlier_rows(tmp_path, rows) -> None:
    path = tmp_path / "sub" / "r.csv"
    append_results(path, rows[:1])
    append_results(path, rows[1:])
    assert [r["method"] for r in read_results(path)] == ["global-magnitude", "random-search"]


def test_bad_files_are_refused_with_where(tmp_path, rows) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_results(tmp_path / "absent.csv")
    path = write_results(tmp_path / "r.csv", rows)
    text = path.read_text().replace("params_ratio", "ratio_of_params")
    (tmp_path / "cols.csv").write_text(text)
    with pytest.raises(DataError, match="missing column.*params_ratio"):
        read_results(tmp_path / "cols.csv")
    rewrite(path, lambda r: r.update(macs="many") if r["method"] == "random-search" else None)
    with pytest.raises(DataError, match=r"line 3: column 'macs' holds 'many'.*integer"):
        read_results(path)
    rewrite(path, lambda r: r.update(macs="1", keep="[3, 0]"))
    with pytest.raises(DataError, match="line 2: column 'keep'"):
        read_results(path)
    rewrite(path, lambda r: r.update(keep="[3]", val_accuracy=""))
    with pytest.raises(DataError, match="'val_accuracy' is empty"):
        read_results(path)


def test_write_refuses_incomplete_rows(tmp_path, rows) -> None:
    partial = {k: v for k, v in rows[0].items() if k not in ("macs", "keep")}
    with pytest.raises(InvalidArgumentError, match=r"rows\[1\] lacks keep, macs"):
        write_results(tmp_path / "r.csv", [rows[0], partial])
    assert not (tmp_path / "r.csv").exists()  # nothing half-written


def test_replay_reproduces_real_rows(tmp_path, rows) -> None:
    path = write_results(tmp_path / "r.csv", rows)
    checks = validate_results(path)
    assert [c.ok for c in checks] == [True, True], [c.mismatches for c in checks]
    assert [c.line for c in checks] == [2, 3]
    assert checks[1].method == "random-search" and checks[1].task == TASK


def test_replay_flags_tampered_rows(tmp_path, rows) -> None:
    path = write_results(tmp_path / "r.csv", rows)
    recorded = rows[1]["val_accuracy"]

    def tamper(r: dict) -> None:
        if r["method"] == "global-magnitude":
            r["macs"] = str(int(r["macs"]) - 1000)  # claims a smaller network
            r["feasible"] = "0"
        else:
            r["val_accuracy"] = repr(recorded + 0.004)  # within the default tolerance

    rewrite(path, tamper)
    first, second = validate_results(path)
    assert not first.ok and {m[0] for m in first.mismatches} == {"macs", "feasible"}
    column, claimed, replayed = next(m for m in first.mismatches if m[0] == "macs")
    assert claimed == rows[0]["macs"] - 1000 and replayed == rows[0]["macs"]
    assert second.ok  # 0.004 is inside the stated tolerance of 0.005
    strict = validate_results(path, tolerance=0.001)[1]
    assert not strict.ok and strict.mismatches[0][0] == "val_accuracy"
    assert strict.mismatches[0][2] == pytest.approx(recorded)

    rewrite(path, lambda r: r.update(keep="[4, 4]"))  # a state of another network
    assert all(not c.ok and c.mismatches[0][0] == "keep" for c in validate_results(path))


def test_replay_refuses_other_tasks_and_settings(tmp_path, rows) -> None:
    path = write_results(tmp_path / "r.csv", rows)
    with pytest.raises(DataError, match="digits-cnn-v1.*task='digits-resnet-v1'"):
        validate_results(path, task="digits-resnet-v1")
    with pytest.raises(InvalidArgumentError, match="tolerance"):
        validate_results(path, tolerance=2)
    rewrite(path, lambda r: r.update(task="digits-cnn-v9"))
    with pytest.raises(TaskError, match="known tasks"):
        validate_results(path)
    rewrite(path, lambda r: r.update(task=TASK, bn_recalibration="0"))
    assert all(("bn_recalibration", 0, 4) in c.mismatches for c in validate_results(path))
