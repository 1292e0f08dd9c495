"""The docs site: every Python example runs as written, every documented command exists,
the presets table and the results page follow the code, and Sphinx builds with warnings as
errors.

A page whose python blocks are meant to run says so with the HTML comment
``<!-- docs-test: run ... -->``; its blocks run in order in one namespace (as a script:
``__name__ == "__main__"``), and a check below asserts what the page promises. A python
block on any other page fails the test: an example that is not run is not documented.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.time_limit import time_limit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_MARK = "<!-- docs-test: run"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.relative_to(DOCS).parts)


def _name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _fences(page: Path, language: str) -> list[re.Match]:
    return list(re.finditer(rf"^```{language}\n(.*?)^```", page.read_text(),
                            flags=re.S | re.M))


def blocks(page: Path, language: str) -> list[str]:
    """The fenced ```language blocks of a page, in order."""
    return [m.group(1) for m in _fences(page, language)]


def script(page: Path) -> str:
    """The page's python blocks as one script whose line numbers are the page's, so that a
    traceback points at the line of the page."""
    text, code = page.read_text(), ""
    for m in _fences(page, "python"):
        code += "\n" * (text.count("\n", 0, m.start(1)) - code.count("\n")) + m.group(1)
    return code


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# -- what each runnable page promises -----------------------------------------------------
def check_quickstart(ns: dict, tmp_path: Path) -> None:
    assert ns["agent"].num_timesteps >= 256
    info = ns["info"]
    assert 0.0 <= info["accuracy"] <= 1.0 and info["cost"] >= 0.0
    from prune_gym.tasks import make_task

    assert ns["env"].unwrapped.net.base_params == _params(make_task("digits-cnn-v1").model)
    assert _params(ns["pruned"]) < ns["env"].unwrapped.net.base_params


def check_agents(ns: dict, tmp_path: Path) -> None:
    from agents import GraphPolicy

    agent, resnet = ns["agent"], ns["resnet"]
    assert isinstance(agent.policy, GraphPolicy) and agent.num_timesteps >= 64
    assert ns["action"].shape == resnet.action_space.shape
    assert len(ns["info"]["keep"]) == 12 and ns["small"].unwrapped.num_groups == 3
    assert (tmp_path / "runs" / "gnnrl" / "config.json").is_file()
    best = ns["run"].best  # a DNNGraph episode terminates only once the budget holds
    assert best is not None and 0.0 <= best["accuracy"] <= 1.0 and best["macs_ratio"] <= 0.5
    amc = ns["amc"].best  # the action wall: every AMC episode ends within the budget
    assert amc is not None and amc["macs_ratio"] <= 0.5 and ns["amc"].model.num_timesteps >= 330
    assert ns["pruner"].best["macs_ratio"] <= 0.5 and ns["pruner"].num_evaluations <= 60
    assert _params(ns["smaller"]) < _params(ns["net"].original_copy())
    result = ns["result"]
    assert result.feasible and result.evaluations <= 21 and 0.0 < result.val_accuracy <= 1.0
    assert {"uniform", "amc", "rl-pruner"} <= set(ns["method_names"]())


def check_tasks(ns: dict, tmp_path: Path) -> None:
    assert {"digits-cnn-v1", "digits-resnet-v1"} <= set(ns["list_tasks"]())
    assert ns["task"].budget == 0.3 and ns["task"].name == "digits-resnet-v1"
    assert ns["mine"].name == "my-digits-v0" and ns["mine"].budget == 0.6


def check_prune_your_cnn(ns: dict, tmp_path: Path) -> None:
    import torch

    model, net = ns["model"], ns["net"]
    assert [g.size for g in net.groups] == [32, 48, 64]  # the add couples the stem's group
    assert model.stem[0].out_channels == 32  # the user's model is untouched
    assert [r.method for r in ns["results"]] == ["uniform", "global_magnitude",
                                                 "random_search"]
    assert all(r.macs_ratio <= 0.5 for r in ns["results"])
    assert _params(ns["smaller"]) < _params(model)
    x = ns["x_val"][:16]  # the saved file computes what the fine-tuned model computes
    assert (tmp_path / "my_cnn_pruned.ts").is_file()
    assert torch.allclose(ns["reloaded"](x), ns["smaller"](x), atol=1e-5)
    info = ns["info"]  # project mode: the RL episode ends within budget
    assert info["feasible"] and info["macs_ratio"] <= 0.5
    assert _params(ns["rl_model"]) < _params(model)
    assert len(ns["taylor"].scores(0)) == 32
    assert [g.name for g in ns["frozen"].groups] == ["stem.0", "head.0"]
    assert (tmp_path / "my_cnn_latency.json").is_file()  # the latency budget section
    net.set_latency_model(ns["latency"])
    full = net.metric([g.size for g in net.groups], "latency")
    assert ns["fast_info"]["latency_ratio"] == pytest.approx(
        net.metric(ns["fast_env"].unwrapped.keep, "latency") / full)
    assert net.metric(ns["fast_keep"], "latency") <= 0.8 * full


def check_benchmark_your_rl(ns: dict, tmp_path: Path) -> None:
    import torch

    assert ns["agent"].num_timesteps >= 64  # the vector-env PPO, the last agent defined
    assert ns["rewards"].shape == (2,) and ns["infos"]["cost"].shape == (2,)
    assert isinstance(ns["cost"], float) and ns["cost"] >= 0.0  # the Safety-Gymnasium tuple
    assert ns["r"].method == "random_search" and ns["r"].macs_ratio <= 0.5
    assert len(ns["returns"]) == 20 and "accuracy" in ns["info"]
    log_std = ns["policy"].log_std.detach()  # REINFORCE updated the policy
    assert not torch.allclose(log_std, torch.full_like(log_std, -0.5))


CHECKS = {"quickstart.md": check_quickstart, "agents.md": check_agents,
          "tasks.md": check_tasks, "prune_your_cnn.md": check_prune_your_cnn,
          "benchmark_your_rl.md": check_benchmark_your_rl}
# Step counts cut so that the suite stays fast; each must occur on its page.
SHORTER = {"agents.md": [("total_timesteps=1_000", "total_timesteps=100")]}
RUNNABLE = [p for p in PAGES if RUN_MARK in p.read_text()]


def test_every_python_example_is_run() -> None:
    unrun = [_name(p) for p in PAGES if blocks(p, "python") and p not in RUNNABLE]
    assert not unrun, f"python examples on pages that are not run: {unrun}; mark the page "\
        f"with '{RUN_MARK} ...' and add its check to tests/test_docs.py"
    assert sorted(_name(p) for p in RUNNABLE) == sorted(CHECKS)
    assert all(blocks(p, "python") for p in RUNNABLE)


@pytest.mark.parametrize("page", RUNNABLE, ids=_name)
def test_page_examples_run(page: Path, tmp_path, monkeypatch) -> None:
    from prune_gym.tasks import registry

    code = script(page)
    for old, new in SHORTER.get(_name(page), []):
        assert old in code, f"{_name(page)} no longer contains {old!r}"
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)  # run directories and files land here
    tasks = dict(registry._TASKS)  # a page may register its own task: put the list back
    ns: dict = {"__name__": "__main__"}
    try:
        with time_limit(300):
            exec(compile(code, str(page), "exec"), ns)  # noqa: S102
    finally:
        registry._TASKS.clear()
        registry._TASKS.update(tasks)
    CHECKS[_name(page)](ns, tmp_path)


def test_documented_commands_exist() -> None:
    """Every ``prune-gym ...`` line in the docs parses with the command line's own parser
    (tests/test_cli.py runs the commands); every ``make X`` names a Makefile target."""
    from agents.cli import build_parser

    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    commands = []
    for page in PAGES:
        for block in blocks(page, "bash"):
            for line in block.splitlines():
                argv = shlex.split(line, comments=True)
                if argv[:1] == ["make"]:
                    assert argv[1] in targets, f"{_name(page)}: no make target {argv[1]!r}"
                elif argv[:1] == ["prune-gym"]:
                    commands.append((_name(page), argv[1:]))
    assert len(commands) >= 5
    parser = build_parser()
    for where, argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: 'prune-gym {shlex.join(argv)}' does not parse")


def test_presets_table_matches_presets() -> None:
    from agents import PRESETS
    from agents.train import ALGORITHMS

    page = (DOCS / "agents.md").read_text()
    assert all(f'`"{name}"`' in page for name in ALGORITHMS), "an algorithm name is missing"

    rows = {}
    for line in (DOCS / "agents.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0].strip("`")] = cells
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        _, env, algo, policy, source = rows[name]
        assert env.startswith(f"`{preset.env_id}`") and algo == f"`{preset.algo}`"
        assert f"`{preset.policy}`" in policy and source
        extractor = preset.policy_kwargs.get("features_extractor")
        assert extractor is None or f"`{extractor}`" in policy
        assert preset.n_envs == 1 or f"{preset.n_envs} environments" in env


def test_docs_build_without_warnings(tmp_path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path / "html"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    for page in ("index", "quickstart", "envs/DNNGraph-v0", "api/prune_gym", "api/agents",
                 "results"):
        assert (out / f"{page}.html").is_file()
    assert "PPOLagrangian" in (out / "api" / "agents.html").read_text()
    results = (out / "results.html").read_text()
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        title = table.read_text().splitlines()[0].lstrip("# ").strip()
        assert html.escape(title, quote=False) in results, f"{table.name} is not on the page"
