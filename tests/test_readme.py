"""The README's agent examples run as written (only the step counts of the training-run
example are cut, so the test takes seconds)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_agents_examples_run(tmp_path, monkeypatch) -> None:
    blocks = python_blocks("Agents")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)  # the run directory goes here
    card = {}
    exec(compile(blocks[0], "README.md:Agents[0]", "exec"), card)  # noqa: S102
    assert card["agent"].num_timesteps >= 128 and card["agent"].lagrange_multiplier >= 0
    assert sum(p.numel() for p in card["pruned"].parameters()) < \
        sum(p.numel() for p in card["task"].model.parameters())
    short = blocks[1].replace("total_timesteps=2_000", "total_timesteps=100")
    assert short != blocks[1]
    run = {}
    exec(compile(short, "README.md:Agents[1]", "exec"), run)  # noqa: S102
    assert (tmp_path / "runs" / "gnnrl" / "config.json").is_file()
    best = run["run"].best  # the printed best feasible state exists and is within budget
    assert best is not None and 0.0 <= best["accuracy"] <= 1.0 and best["macs_ratio"] <= 0.5


def test_use_example_runs() -> None:
    blocks = python_blocks("Use")
    assert len(blocks) == 1
    card = {}
    exec(compile(blocks[0], "README.md:Use", "exec"), card)  # noqa: S102
    info = card["info"]
    assert card["agent"].num_timesteps >= 256
    assert card["terminated"] or card["truncated"]  # the loop ran an episode to its end
    assert 0.0 <= info["accuracy"] <= 1.0
    # the cost the README defines: max(0, metric / limit - 1), the budget being 0.5 of MACs
    assert info["cost"] == pytest.approx(max(0.0, info["macs_ratio"] / 0.5 - 1.0))
    # the exported module is exactly the state the episode ended in and priced
    assert sum(p.numel() for p in card["pruned"].parameters()) == info["params"]


def test_command_line_examples_parse() -> None:
    """Every prune-gym line of the README is a command the parser accepts."""
    from agents.cli import build_parser

    text = README.read_text().replace("\\\n", " ")
    lines = [line.split("#")[0].split() for line in text.splitlines()
             if line.startswith("prune-gym ")]
    assert len(lines) >= 5
    for words in lines:
        build_parser().parse_args(words[1:])
