"""Sphinx configuration of the prune-gym docs: Markdown pages through MyST, API reference
from the Google-style docstrings (autodoc + napoleon).

Built offline with warnings as errors: no intersphinx, no remote theme (the built-in
``alabaster``). Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # autodoc imports prune_gym and agents from this checkout
os.environ.setdefault("OMP_NUM_THREADS", "1")

import prune_gym  # noqa: E402
from prune_gym.envs import PruneEnv  # noqa: E402

project = "prune-gym"
author = "the prune-gym authors"
release = version = prune_gym.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "alabaster"
html_title = f"prune-gym {release}"
html_theme_options = {"description": "RL environments for structured pruning of CNNs"}


def _env_docstring(app, what, name, obj, options, lines) -> None:
    """Environment classes keep Gymnasium's Markdown sections in their docstrings, which
    docs/generate_env_docs.py renders as the environment pages; the API reference shows
    the summary line and points there instead of parsing Markdown as reST."""
    if what == "class" and inspect.isclass(obj) and issubclass(obj, PruneEnv) and obj.env_id:
        summary = inspect.cleandoc(obj.__doc__ or "").split("\n\n")[0]
        lines[:] = [*summary.splitlines(), "",
                    f"Spaces, rewards, episode end and arguments: :doc:`/envs/{obj.env_id}`."]


RESULTS = ROOT / "benchmarks" / "results"
# The agents' comparison first, then what the design choices rest on, then speed; any table
# not named here follows in alphabetical order, so a new one can never be left out.
RESULTS_ORDER = ("agents", "reward_signal", "lagrangian", "transfer", "policies", "latency",
                 "latency_searched", "latency_searched_onnx",
                 "engine", "envs", "reference_accuracy")


def results_tables() -> list[Path]:
    """Every committed benchmark table, in page order."""
    tables = sorted(RESULTS.glob("*.md"))
    rank = {name: i for i, name in enumerate(RESULTS_ORDER)}
    return sorted(tables, key=lambda t: (rank.get(t.stem, len(rank)), t.stem))


def _append_results(app, docname, source) -> None:
    """The results page includes every ``benchmarks/results/*.md`` as it is committed."""
    if docname == "results":
        source[0] += "".join(f"\n```{{include}} ../benchmarks/results/{t.name}\n"
                             ":heading-offset: 1\n```\n" for t in results_tables())


def setup(app) -> None:
    app.connect("source-read", _append_results)
    # read the results page on every build: a new table changes no file Sphinx tracks
    app.connect("env-get-outdated", lambda app, env, added, changed, removed: ["results"])
    app.connect("autodoc-process-docstring", _env_docstring)
