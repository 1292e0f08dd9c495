"""A run directory: what it was made for, the resume check, ``best.json`` and ``curve.csv``.

A search (:func:`agents.methods.run_method`) and a training run (:func:`agents.train`) both
write a directory a person and ``resume`` can use. They share one protocol, here: a marker
file (``search.json`` or ``config.json``) records the settings the directory was made for;
a directory that holds a run is refused without ``resume``, and resumed only with the same
settings. :class:`RunDirectory` is also the one writer of ``best.json`` (the best feasible
state, in one schema: :data:`BEST_KEYS`) and of ``curve.csv`` (best feasible validation
accuracy against evaluations). Everything is read as JSON or CSV, never unpickled, and
written atomically.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from prune_gym.errors import PruneGymError
from prune_gym.files import write_json_atomic

__all__ = ["BEST_KEYS", "Curve", "RunDirectory", "RunDirectoryError", "best_state"]

# best.json, whoever finds the state: its score, the state (counts, and the exact state:
# ChannelMask's kept indices), its ratios, feasibility, what it cost, when an agent saw it
BEST_KEYS = ("accuracy", "keep", "keep_state", "macs_ratio", "params_ratio", "feasible",
             "evaluations", "timestep")


class RunDirectoryError(PruneGymError):
    """A run directory cannot be used as asked (exists without resume, or made for another run)."""


def plain_keep(keep) -> list:
    """A keep state in plain JSON types: counts, or kept channel indices per group."""
    out = []
    for k in keep:
        if isinstance(k, (int, np.integer)):
            out.append(int(k))
        else:
            arr = np.asarray(k)
            out.append(np.flatnonzero(arr).tolist() if arr.dtype == bool else
                       [int(i) for i in arr])
    return out


def best_state(*, accuracy: float, keep_state, macs_ratio: float, params_ratio: float,
               feasible: bool, evaluations: int | None, timestep: int | None = None) -> dict:
    """A ``best.json`` record (:data:`BEST_KEYS`), in plain JSON types."""
    state = plain_keep(keep_state)
    return {"accuracy": float(accuracy),
            "keep": [k if isinstance(k, int) else len(k) for k in state],
            "keep_state": state, "macs_ratio": float(macs_ratio),
            "params_ratio": float(params_ratio), "feasible": bool(feasible),
            "evaluations": None if evaluations is None else int(evaluations),
            "timestep": None if timestep is None else int(timestep)}


class RunDirectory:
    """One run's directory.

    Args:
        path: the directory.
        marker: the file that records the settings the directory was made for.
    """

    def __init__(self, path: str | os.PathLike, marker: str):
        self.path = Path(path)
        self.marker = marker

    @property
    def holds_run(self) -> bool:
        return (self.path / self.marker).is_file()

    def open(self, settings: Mapping[str, Any], *, resume: bool,
             keys: Iterable[str]) -> RunDirectory:
        """Start a new run here, or check that ``resume`` continues the one it holds.

        Args:
            settings: what the run is; written to the marker file when it starts.
            resume: continue the run the directory holds.
            keys: the settings a resumed run must share with the saved ones.

        Raises:
            RunDirectoryError: a run is here and ``resume`` is not set; ``resume`` is set and
                no run is here; or the run here was made for other ``keys``.
        """
        where = f"run_dir={str(self.path)!r}"
        if self.holds_run:
            if not resume:
                raise RunDirectoryError(f"{where} already holds a run; pass resume=True to "
                                        "continue it, or choose a new run_dir")
            saved = json.loads((self.path / self.marker).read_text())
            for key in keys:
                if saved.get(key) != settings.get(key):
                    raise RunDirectoryError(
                        f"{where} was made for {key}={saved.get(key)!r}, not "
                        f"{settings.get(key)!r}; resume it with the same {key}, or use a new "
                        "run_dir")
            return self
        if resume:
            raise RunDirectoryError(f"{where} holds no run to resume (no {self.marker}); start "
                                    "it without resume=True")
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_json(self.marker, dict(settings))
        return self

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``name`` in the directory atomically."""
        target = self.path / name
        write_json_atomic(data, target)
        return target

    def read_best(self) -> dict | None:
        """``best.json``, or None when there is none yet."""
        path = self.path / "best.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_best(self, state: Mapping[str, Any]) -> None:
        """Write ``best.json`` (a :func:`best_state` record)."""
        missing = [k for k in BEST_KEYS if k not in state]
        if missing:
            raise ValueError(f"a best.json record lacks {', '.join(missing)}")
        self.write_json("best.json", {k: state[k] for k in BEST_KEYS})

    def curve(self, on_progress: Callable[[int, float | None], None] | None = None,
              resume: bool = False) -> Curve:
        """The run's ``curve.csv``: continued when ``resume``, else started afresh."""
        return Curve(self.path / "curve.csv", on_progress, resume)


class Curve:
    """Best feasible validation accuracy against evaluations spent, appended to a CSV as it
    grows (so an interrupted run keeps it, and a resumed one goes on).

    Args:
        path: the CSV, or None to keep the curve in memory only.
        on_progress: called with (evaluations so far, best feasible accuracy or None).
        resume: read the points already in ``path`` and go on from them.
    """

    def __init__(self, path: Path | None, on_progress: Callable | None = None,
                 resume: bool = False):
        self.path = path
        self.on_progress = on_progress
        self.points: list[tuple[int, float | None]] = []
        self.best: float | None = None
        self.seconds = 0.0
        if resume and self.path is not None and self.path.is_file():
            with open(self.path) as f:
                for r in csv.DictReader(f):
                    best = float(r["best_val_accuracy"]) if r["best_val_accuracy"] else None
                    self.points.append((int(r["evaluations"]), best))
                    self.best = best
                    self.seconds = float(r["wall_time_s"])
        elif self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("evaluations,best_val_accuracy,wall_time_s\n")
        self.offset = self.points[-1][0] if self.points else 0
        self._start = time.perf_counter() - self.seconds

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def record(self, evaluations: int, accuracy: float | None) -> None:
        """A point: ``accuracy`` of a feasible state (None: an infeasible one) after
        ``evaluations``."""
        if accuracy is not None and (self.best is None or accuracy > self.best):
            self.best = accuracy
        point = (int(evaluations), self.best)
        if self.points and self.points[-1] == point:
            return
        self.points.append(point)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(f"{point[0]},{'' if self.best is None else self.best},"
                        f"{self.elapsed:.3f}\n")
        if self.on_progress is not None:
            self.on_progress(point[0], self.best)
