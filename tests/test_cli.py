"""The prune-gym command line: each sub-command on the embedded task with tiny budgets, the
files it writes, its exit codes (0 done, 1 a failed check, 2 bad usage, 130 interrupted),
Ctrl-C then --resume, and validate flagging a tampered row."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re

import pytest
import torch

from agents.cli import build_parser, main
from agents.cli.progress import Progress
from agents.results import read_results
from prune_gym.export import load_model, read_metadata
from tests.time_limit import time_limit

TASK = "digits-cnn-v1"
# the example, with fewer validation images so that the test takes seconds
SEARCH = ["search", "--task", TASK, "--env", "DNNGraph-v0", "--agent", "ppo-lagrangian-gat",
          "--budget", "0.5", "--timesteps", "64", "--val-samples", "100"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``prune-gym argv`` in this process: exit code, stdout, stderr."""
    with time_limit(240):
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """One finished search run directory (shared by validate, finetune and export)."""
    out = tmp_path_factory.mktemp("cli") / "a"
    with time_limit(240):
        assert main([*SEARCH, "--out", str(out)]) == 0
    return out


def test_listings_one_line_each(capsys) -> None:
    code, out, _ = run(capsys, "envs")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "LayerRatio-v0", "DNNGraph-v0", "ChannelMask-v0"]
    code, out, _ = run(capsys, "tasks")
    assert code == 0 and {"digits-cnn-v1", "digits-resnet-v1"} <= {
        line.split()[0] for line in out.splitlines()}
    code, out, _ = run(capsys, "agents")
    names = {line.split()[0]: line.split()[1:3] for line in out.splitlines()}
    assert code == 0 and names["ppo-lagrangian-gat"] == ["rl", "DNNGraph-v0"]
    assert names["uniform"] == ["heuristic", "-"] and "random-search" in names
    code, out, _ = run(capsys, "describe", "--task", TASK)
    assert code == 0 and "3 prunable group(s)" in out


def test_help_is_plain_text(capsys) -> None:
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"envs", "tasks", "agents", "search", "finetune", "export", "validate",
            "benchmark", "demo"} <= set(commands)
    for name in ["", *commands]:
        code, out, _ = run(capsys, *([name] if name else []), "--help")
        assert code == 0 and "usage: prune-gym" in out
        assert not any(mark in out for mark in ("``", ":class:", ":func:", ":mod:")), name


@pytest.mark.parametrize(("argv", "says"), [
    (["search", "--task", "digits-cnn-v7", "--agent", "uniform"], "known tasks: cifar10"),
    (["search", "--agent", "genetic"], "choose one of ppo-lagrangian-gat"),
    (["search", "--agent", "uniform", "--env", "Pong-v5"], "choose one of LayerRatio-v0"),
    (["search", "--agent", "uniform", "--env", "DNNGraph-v0"], "uses no environment"),
    (["search", "--agent", "ppo-lagrangian-gat", "--env", "LayerRatio-v0"],
     "trains on DNNGraph-v0.*malik"),
    (["search", "--agent", "uniform", "--budget", "1.5"], "--budget=1.5 is outside"),
    (["search", "--agent", "uniform", "--budget", "0.0001"], "cannot be reached"),
    (["search", "--agent", "uniform", "--evaluations", "0"], "must be >= 1"),
    (["search", "--budget", "0.5"], "required: --agent"),
    (["benchmark", "everything"], "choose one of engine, envs"),
    (["finetune", "no/such/run"], "does not exist"),
])
def test_bad_usage_exits_2_with_a_clear_message(capsys, tmp_path, monkeypatch, argv,
                                                says) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert re.search(says, err), err
    assert not (tmp_path / "runs").exists()  # nothing half-done left behind


def test_search_writes_a_run_directory(search_run) -> None:
    names = {p.name for p in search_run.iterdir()}
    assert {"search.json", "config.json", "progress.csv", "episodes.csv", "best.json",
            "curve.csv", "curve.png", "results.csv", "model.zip", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    (row,) = read_results(search_run / "results.csv")
    assert row["method"] == "ppo-lagrangian-gat" and row["env_id"] == "DNNGraph-v0"
    assert len(row["keep"]) == 3 and row["val_samples"] == 100
    best = json.loads((search_run / "best.json").read_text())
    assert best["keep_state"] == row["keep"] and best["accuracy"] == row["val_accuracy"]
    assert row["feasible"] == (row["macs_ratio"] <= 0.5)
    with open(search_run / "curve.csv") as f:
        curve = list(csv.DictReader(f))
    assert int(curve[-1]["evaluations"]) == row["evaluations"] > 0
    assert (search_run / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_validate_flags_a_tampered_row(capsys, search_run, tmp_path) -> None:
    code, out, _ = run(capsys, "validate", str(search_run / "results.csv"))
    assert code == 0 and "1 of 1 row(s) reproduce" in out
    (row,) = read_results(search_run / "results.csv")
    text = (search_run / "results.csv").read_text()
    tampered = tmp_path / "results.csv"
    tampered.write_text(text + text.splitlines()[1].replace(
        repr(row["val_accuracy"]), repr(min(1.0, row["val_accuracy"] + 0.05))) + "\n")
    code, out, _ = run(capsys, "validate", str(tampered))
    assert code == 1
    assert "line 2: ppo-lagrangian-gat on digits-cnn-v1: ok" in out
    assert "line 3: ppo-lagrangian-gat on digits-cnn-v1: DOES NOT REPRODUCE" in out
    assert "val_accuracy: recorded" in out and "1 flagged" in out
    code, _, err = run(capsys, "validate", str(tampered), "--task", "digits-resnet-v1")
    assert code == 2 and "digits-cnn-v1" in err
    (tmp_path / "cols.csv").write_text(text.replace(",macs,", ",flops,"))
    code, _, err = run(capsys, "validate", str(tmp_path / "cols.csv"))
    assert code == 2 and "missing column(s) macs" in err


def test_finetune_then_export(capsys, search_run, tmp_path) -> None:
    code, out, _ = run(capsys, "finetune", str(search_run), "--steps", "20")
    assert code == 0 and "20 steps" in out
    (row,) = read_results(search_run / "results.csv")
    assert row["finetune_steps"] == 20
    for column in ("test_accuracy", "finetuned_val_accuracy", "finetuned_test_accuracy"):
        assert 0.0 <= row[column] <= 1.0
    assert read_metadata(search_run / "finetuned.pt")["keep"] == row["keep"]

    code, out, _ = run(capsys, "export", str(search_run), "--format", "torchscript",
                       "--repeats", "3")
    assert code == 0 and "latency batch 64" in out and "fine-tuned" in out
    report = json.loads((search_run / "export.json").read_text())
    assert report["finetuned"] and report["size_bytes"] < report["original_size_bytes"]
    assert set(report["latency"]) == {"1", "64"}
    exported = load_model(search_run / "pruned.ts")
    tuned = load_model(search_run / "finetuned.pt")
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(exported(x), tuned(x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in tuned.parameters()) == row["params"]

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "export", str(empty))
    assert code == 2 and "not a finished run" in err
    if importlib.util.find_spec("onnx") is None:
        code, _, err = run(capsys, "export", str(search_run), "--format", "onnx")
        assert code == 2 and "pip install onnx" in err


def test_ctrl_c_leaves_a_run_that_resume_finishes(capsys, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    argv = [*SEARCH[:-4], "--timesteps", "96", "--val-samples", "100", "--out", str(out)]
    update = Progress.update

    def interrupt(self, count, status=""):  # Ctrl-C once some evaluations are done
        update(self, count, status)
        if count >= 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "update", interrupt)
    code, _, err = run(capsys, *argv)
    assert code == 130 and "--resume" in err and str(out) in err
    stopped = json.loads((out / "checkpoints" / "latest.json").read_text())["timesteps"]
    assert 0 < stopped < 96 and not (out / "results.csv").exists()
    with open(out / "curve.csv") as f:
        before = list(csv.DictReader(f))

    monkeypatch.setattr(Progress, "update", update)
    code, _, err = run(capsys, *argv[:-2], "--budget", "0.4", "--out", str(out), "--resume")
    assert code == 2 and "budget" in err  # other settings are refused
    code, _, err = run(capsys, *argv)  # without --resume the run is not overwritten
    assert code == 2 and "already holds a run" in err
    code, _, _ = run(capsys, *argv, "--resume")
    assert code == 0
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["timesteps"] >= 96
    with open(out / "curve.csv") as f:
        after = list(csv.DictReader(f))
    assert after[:len(before)] == before and len(after) >= len(before)
    (row,) = read_results(out / "results.csv")
    assert row["evaluations"] > int(before[-1]["evaluations"])
    code, _, _ = run(capsys, "validate", str(out / "results.csv"))
    assert code == 0
    code, _, err = run(capsys, *argv[:-2], "--out", str(tmp_path / "none"), "--resume")
    assert code == 2 and "no run to resume" in err


def test_baselines_table(capsys, tmp_path) -> None:
    code, out, _ = run(capsys, "baselines", "--evaluations", "3", "--val-samples", "100",
                       "--out", str(tmp_path / "b.csv"))
    assert code == 0
    methods = [line.split()[0] for line in out.splitlines()[3:]]
    assert methods == ["unpruned", "uniform", "global-magnitude", "random-search"]
    rows = read_results(tmp_path / "b.csv")
    assert [r["method"] for r in rows] == methods[1:]
    assert all(r["test_accuracy"] is not None and r["macs_ratio"] <= 0.5 for r in rows)


def test_benchmark_passes_arguments_to_the_script(capfd) -> None:
    with time_limit(120):
        code = main(["benchmark", "engine", "--help"])
    out, _ = capfd.readouterr()
    assert code == 0 and "--models" in out and "Engine benchmark" in out  # the script's own


def test_demo(capsys, tmp_path) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--evaluations", "6", "--finetune-steps", "10", "--latency-repeats", "3",
            "--format", "state_dict", "--val-samples", "100", "--out", str(out)]
    code, text, _ = run(capsys, *argv)
    assert code == 0
    methods = ["uniform", "global-magnitude", "random-search", "ppo-lagrangian-gat"]
    rows = read_results(out / "results.csv")
    assert [r["method"] for r in rows] == methods
    tuned = [r for r in rows if r["finetune_steps"] is not None]
    assert len(tuned) == 1 and tuned[0]["feasible"]
    assert tuned[0]["val_accuracy"] == max(r["val_accuracy"] for r in rows if r["feasible"])
    assert all(r["test_accuracy"] is not None for r in rows)
    for name in ("accuracy_vs_macs.png", "demo.md", "demo.json", "export.json",
                 "finetuned.pt", "pruned.pt", *(f"{m}/curve.png" for m in methods),
                 *(f"{m}/results.csv" for m in methods)):
        assert (out / name).is_file(), name
    lines = text.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("method"))):]
    assert table[0].split()[:3] == ["method", "MACs", "kept"]
    assert [line.split()[0] for line in table[2:7]] == ["unpruned", *methods]
    assert json.loads((out / "export.json").read_text())["format"] == "state_dict"
    code, _, _ = run(capsys, "validate", str(out / "results.csv"))
    assert code == 0
    code, _, err = run(capsys, *argv)
    assert code == 2 and "--overwrite" in err


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    with Progress("search", total=10, unit="eval", stream=screen) as bar:
        bar.update(3, "best feasible val acc 0.9000")
    assert "3/10" in screen.getvalue() and "best feasible val acc 0.9000" in screen.getvalue()
    log = io.StringIO()
    with Progress("search", total=10, unit="eval", stream=log, interval=0.0) as bar:
        bar.update(4, "no feasible state yet")
    assert log.getvalue().splitlines()[0].startswith("search: 4/10 eval  no feasible state yet")
    quiet = io.StringIO()
    with Progress("search", total=10, stream=quiet, interval=3600.0) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""  # short steps print nothing in logs and tests
