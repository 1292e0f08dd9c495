"""Wrappers around the pruning environments: Safety-Gymnasium's API, a cost penalty, and
an episode recorder whose CSV can be replayed and validated.

Recording exists because a pruning search is only as credible as the states it reports:
every finished episode's exact keep state is written with its metrics, and
:func:`validate_records` re-prices (and optionally re-evaluates) each one on the engine to
show the numbers were not an artefact of the run.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import gymnasium as gym

from prune_gym.errors import DataError, InvalidArgumentError

RECORD_FIELDS = ("episode", "env_id", "length", "return", "cost", "accuracy", "macs",
                 "params", "macs_ratio", "params_ratio", "feasible", "budget", "constraint",
                 "importance", "keep")


class SafetyGymnasiumAdapter(gym.Wrapper):
    """Safety-Gymnasium's step API: ``step -> (obs, reward, cost, terminated, truncated,
    info)``, with ``cost = info["cost"]``; ``reset`` is unchanged.

    Put it outermost: Gymnasium wrappers expect the 5-tuple.
    """

    def step(self, action):  # type: ignore[override]
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, float(info.get("cost", 0.0)), terminated, truncated, info


class CostPenalty(gym.Wrapper):
    """Reward shaping for unconstrained agents: ``reward - coef * info["cost"]``.

    A fixed-multiplier Lagrangian; a learned multiplier (PPO-Lagrangian) is the principled
    alternative, this is the baseline.
    """

    def __init__(self, env: gym.Env, coef: float = 1.0):
        if not isinstance(coef, (int, float)) or not math.isfinite(coef) or coef < 0:
            raise InvalidArgumentError(f"coef must be a finite number >= 0; got {coef!r}")
        super().__init__(env)
        self.coef = float(coef)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward - self.coef * float(info.get("cost", 0.0)), terminated, truncated, \
            info


class EpisodeRecorder(gym.Wrapper):
    """Append one CSV row per finished episode: keep state, metrics, return and cost.

    The file is opened per episode (never held open), so the wrapper pickles and works in
    subprocess vector environments; give each worker its own ``path``.

    Args:
        env: a pruning environment (possibly wrapped).
        path: CSV file; created with a header if absent, appended to otherwise.
    """

    def __init__(self, env: gym.Env, path: str | Path):
        super().__init__(env)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.episodes = 0
        self._return = 0.0
        self._cost = 0.0
        self._length = 0

    def reset(self, **kwargs):
        self._return, self._cost, self._length = 0.0, 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._return += float(reward)
        self._cost += float(info.get("cost", 0.0))
        self._length += 1
        if terminated or truncated:
            self._write(info)
        return obs, reward, terminated, truncated, info

    def _write(self, info: dict[str, Any]) -> None:
        base = self.env.unwrapped
        row = {
            "episode": self.episodes, "env_id": base.env_id, "length": self._length,
            "return": self._return, "cost": self._cost,
            "accuracy": info.get("accuracy", ""), "macs": info["macs"],
            "params": info["params"], "macs_ratio": info["macs_ratio"],
            "params_ratio": info["params_ratio"], "feasible": int(info["feasible"]),
            "budget": base.budget, "constraint": base.constraint,
            "importance": base.importance, "keep": json.dumps(base.keep_state()),
        }
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RECORD_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.episodes += 1


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an :class:`EpisodeRecorder` CSV with numbers and keep states parsed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"records file {path} does not exist")
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            missing = [k for k in RECORD_FIELDS if k not in row]
            if missing:
                raise DataError(f"{path} is not an EpisodeRecorder file: missing {missing}")
            rows.append({
                **row,
                "episode": int(row["episode"]), "length": int(row["length"]),
                "return": float(row["return"]), "cost": float(row["cost"]),
                "accuracy": float(row["accuracy"]) if row["accuracy"] else None,
                "macs": int(row["macs"]), "params": int(row["params"]),
                "macs_ratio": float(row["macs_ratio"]),
                "params_ratio": float(row["params_ratio"]),
                "feasible": bool(int(row["feasible"])), "budget": float(row["budget"]),
                "keep": json.loads(row["keep"]),
            })
    return rows


def validate_records(path: str | Path, env: gym.Env, *, evaluate: bool = False,
                     atol: float = 1e-9) -> list[dict[str, Any]]:
    """Re-price every recorded keep state on ``env``'s network and compare.

    Args:
        path: an :class:`EpisodeRecorder` CSV.
        env: an environment over the same network and data (it is not stepped).
        evaluate: also re-evaluate accuracy (a forward pass per distinct state).
        atol: tolerance for ratios and accuracy.

    Returns:
        One dict per row: ``episode``, ``ok`` and, where they differ, ``mismatch`` (a list
        of ``(field, recorded, replayed)``).
    """
    base = env.unwrapped
    net = base.net
    out = []
    for row in load_records(path):
        if row["env_id"] != base.env_id:
            raise DataError(f"record {row['episode']} comes from {row['env_id']}, not "
                            f"{base.env_id}")
        keep = row["keep"]
        macs = net.macs(keep, row["importance"])
        params = net.params(keep, row["importance"])
        replayed = {"macs": macs, "params": params, "macs_ratio": macs / net.base_macs,
                    "params_ratio": params / net.base_params}
        if evaluate and row["accuracy"] is not None:
            replayed["accuracy"] = base.evaluate_state(keep, row["importance"])
        mismatch = [(k, row[k], v) for k, v in replayed.items()
                    if (abs(row[k] - v) > atol if isinstance(v, float) else row[k] != v)]
        out.append({"episode": row["episode"], "ok": not mismatch, "mismatch": mismatch})
    return out
