"""A surrogate evaluator: accuracy of a keep state in microseconds, fitted on a state table.

The features of a state are what the table's rows share across samplers: per group, the
fraction of channels kept and the fraction of the group's importance (the network's own
channel scores, L1 by default) that the kept channels carry, which tells a state that keeps
the most important channels from one that keeps arbitrary ones; and the state's MACs and
params ratios. A histogram gradient-boosting regressor (scikit-learn) maps them to each
score column (validation accuracy, test accuracy, validation loss, fine-tuned accuracy
where the table has it).

Nothing is pickled: a surrogate is its table (sha256-checked) plus its fitting settings, and
:func:`fit_surrogate` refits it deterministically (a second or two) wherever it is needed, so
the only artefacts are data. Answers are therefore the same on one machine for every run,
and agree to float rounding across machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from prune_gym.errors import InvalidArgumentError
from prune_gym.surrogate.table import StateTable

__all__ = ["FITTED_TARGETS", "Surrogate", "fit_surrogate", "state_features"]

FITTED_TARGETS = ("val_accuracy", "test_accuracy", "val_loss", "finetuned_val_accuracy",
                  "finetuned_test_accuracy")
# Gradient boosting settings (scikit-learn's HistGradientBoostingRegressor); chosen on the
# digits tables by held-out rank correlation (benchmarks/surrogate_fidelity.py).
HGB_SETTINGS = {"max_iter": 600, "learning_rate": 0.05, "max_leaf_nodes": 31,
                "min_samples_leaf": 10, "l2_regularization": 1e-3, "random_state": 0}
# A target is fitted only with at least this many rows that carry it.
MIN_ROWS = 30


class FlatTrees:
    """A fitted gradient-boosting regressor's trees as flat arrays, evaluated level by level.

    scikit-learn's ``predict`` costs about 20 us per tree and call for one row (input checks,
    thread pools), 10 ms for a 600-tree model, and an env step asks for one state at a time.
    Walking every tree at once with numpy indexing costs one gather per tree level (well under
    a millisecond). No well-kept library does this for scikit-learn's histogram boosting
    without a pickled or compiled artefact, hence these few lines; :meth:`from_sklearn`
    checks them against scikit-learn's own predictions and refuses a mismatch (the layout it
    reads is scikit-learn's internal one).
    """

    def __init__(self, model, check: np.ndarray):
        trees = [predictors[0].nodes for predictors in model._predictors]
        offsets = np.cumsum([0] + [len(t) for t in trees[:-1]])
        nodes = np.concatenate(trees)
        shift = np.repeat(offsets, [len(t) for t in trees])
        self.roots = offsets.astype(np.intp)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"].astype(float)
        self.left = (nodes["left"] + shift).astype(np.intp)
        self.right = (nodes["right"] + shift).astype(np.intp)
        self.leaf = nodes["is_leaf"].astype(bool)
        self.value = nodes["value"].astype(float)
        self.depth = int(nodes["depth"].max()) if len(nodes) else 0
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
        if (nodes["is_categorical"].any() or
                not np.allclose(self.predict(check), model.predict(check), atol=1e-9)):
            raise RuntimeError("the flattened trees disagree with scikit-learn's predict")

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(x)
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(self.leaf[node], node,
                            np.where(go_left, self.left[node], self.right[node]))
        return self.value[node].sum(axis=1) + self.baseline


def _importance_tables(scores: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per group: normalised channel scores, and the cumulative mass of the top-k channels."""
    normalised, top = [], []
    for s in scores:
        s = np.clip(np.asarray(s, dtype=float), 0.0, None)
        total = s.sum()
        p = s / total if total > 0 else np.full(len(s), 1.0 / len(s))
        normalised.append(p)
        top.append(np.concatenate([[0.0], np.cumsum(np.sort(p)[::-1])]))
    return normalised, top


def state_features(counts: np.ndarray, masks: Sequence[Sequence[np.ndarray] | None],
                   sizes: np.ndarray, scores: Sequence[np.ndarray], macs_ratio: np.ndarray,
                   params_ratio: np.ndarray) -> np.ndarray:
    """The feature matrix of states: kept fraction and kept importance per group, MACs and
    params ratios. ``masks[i]`` (per-group boolean masks) or None for a top-k state."""
    counts = np.atleast_2d(np.asarray(counts))
    normalised, top = _importance_tables(scores)
    mass = np.empty(counts.shape, dtype=float)
    for i, row in enumerate(counts):
        state_masks = masks[i]
        for g, k in enumerate(row):
            mass[i, g] = (top[g][k] if state_masks is None
                          else float(normalised[g][np.asarray(state_masks[g], bool)].sum()))
    return np.hstack([counts / sizes, mass, np.asarray(macs_ratio, float).reshape(-1, 1),
                      np.asarray(params_ratio, float).reshape(-1, 1)])


@dataclass
class Surrogate:
    """Predicts a table's score columns for keep states of its network.

    Attributes:
        task: The task the table belongs to.
        table_sha256: sha256 of the table it was fitted on (the surrogate's identity).
        sizes: Channels per group.
        scores: Per group, the channel importance scores the features weigh kept channels by.
        models: The fitted regressor per target column (:class:`FlatTrees`).
        support: Per feature, the ``[min, max]`` the table covers.
        rows: Rows it was fitted on.
        val_samples: Validation images behind each table score (for the noise model).
    """

    task: str
    table_sha256: str
    sizes: np.ndarray
    scores: list[np.ndarray]
    models: dict = field(repr=False)
    support: np.ndarray = field(repr=False)
    rows: int = 0
    val_samples: int = 0

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.models)

    def features(self, counts, masks=None, *, macs_ratio, params_ratio) -> np.ndarray:
        counts = np.atleast_2d(np.asarray(counts, dtype=int))
        if counts.shape[1] != len(self.sizes):
            raise InvalidArgumentError(
                f"keep has {counts.shape[1]} groups, but the surrogate of {self.task} knows "
                f"{len(self.sizes)}: a keep state for another network")
        if (counts < 1).any() or (counts > self.sizes).any():
            raise InvalidArgumentError(f"keep: counts must lie in [1, group size] for "
                                       f"{self.task} (sizes {self.sizes.tolist()})")
        masks = [None] * len(counts) if masks is None else masks
        return state_features(counts, masks, self.sizes, self.scores,
                              np.atleast_1d(macs_ratio), np.atleast_1d(params_ratio))

    def outside_support(self, features: np.ndarray) -> np.ndarray:
        """Per row, True where some feature lies outside the range the table covers."""
        low, high = self.support
        slack = 1e-9
        return ((features < low - slack) | (features > high + slack)).any(axis=1)

    def predict(self, counts, masks=None, *, macs_ratio, params_ratio,
                target: str = "val_accuracy") -> np.ndarray:
        """The predicted ``target`` of each state (accuracies clipped to [0, 1])."""
        if target not in self.models:
            raise InvalidArgumentError(f"target={target!r}: the surrogate of {self.task} "
                                       f"predicts {', '.join(self.models)}")
        x = self.features(counts, masks, macs_ratio=macs_ratio, params_ratio=params_ratio)
        y = self.models[target].predict(x)  # FlatTrees or, where those failed, scikit-learn
        return np.clip(y, 0.0, 1.0) if "accuracy" in target else y

    def sample_noise(self, accuracy: float, rng: np.random.Generator,
                     samples: int | None = None) -> float:
        """``accuracy`` with the sampling noise of a finite validation set: Binomial(n, p)/n,
        n = ``samples`` (default: the table's validation size)."""
        n = int(samples or self.val_samples)
        if n < 1:
            raise InvalidArgumentError(f"samples={samples!r} must be a positive count")
        p = min(1.0, max(0.0, float(accuracy)))
        return float(rng.binomial(n, p) / n)


def fit_surrogate(table: StateTable, scores: Sequence[np.ndarray], *,
                  rows: np.ndarray | None = None,
                  targets: Sequence[str] = FITTED_TARGETS) -> Surrogate:
    """Fit a :class:`Surrogate` on ``table`` (its ``rows``, default all).

    Args:
        table: A loaded state table.
        scores: Per group, the channel importance scores of the table's network, in channel
            order (``net.scores(g)`` for every group).
        rows: Indices of the rows to fit on (the rest can be held out).
        targets: Columns to fit; those with fewer than ``MIN_ROWS`` values are skipped.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    sizes = np.asarray(table.group_sizes)
    if len(scores) != len(sizes) or any(len(s) != n for s, n in zip(scores, sizes)):
        raise InvalidArgumentError("scores must give one score per channel of every group of "
                                   f"the table's network ({table.task}: sizes {sizes.tolist()})")
    rows = np.arange(len(table)) if rows is None else np.asarray(rows)
    masks = [table.unpack_mask(int(i)) for i in rows]
    x = state_features(table.counts[rows], masks, sizes, scores,
                       table.columns["macs_ratio"][rows], table.columns["params_ratio"][rows])
    models = {}
    for target in targets:
        y = table.columns[target][rows]
        ok = np.isfinite(y)
        if ok.sum() < MIN_ROWS:
            continue
        fitted = HistGradientBoostingRegressor(**HGB_SETTINGS).fit(x[ok], y[ok])
        try:
            models[target] = FlatTrees(fitted, x[ok][:256])
        except (AttributeError, KeyError, RuntimeError, ValueError):  # another sklearn layout
            models[target] = fitted
    if not models:
        raise InvalidArgumentError(f"the table of {table.task} has fewer than {MIN_ROWS} "
                                   f"scored rows in {rows.size}: nothing to fit")
    support = np.stack([x.min(axis=0), x.max(axis=0)])
    val_samples = int(table.manifest.get("evaluator", {}).get("val_samples", 0))
    return Surrogate(task=table.task, table_sha256=table.manifest["sha256"], sizes=sizes,
                     scores=[np.asarray(s, dtype=float) for s in scores], models=models,
                     support=support, rows=int(rows.size), val_samples=val_samples)


def rank_fidelity(predicted: np.ndarray, actual: np.ndarray, top: float = 0.1) -> dict:
    """Spearman and Kendall of ``predicted`` against ``actual``, overall and among the
    ``top`` fraction of states by actual score, and the mean absolute error."""
    from scipy.stats import kendalltau, spearmanr

    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    best = np.argsort(-actual)[:max(2, math.ceil(top * len(actual)))]
    return {"n": int(len(actual)),
            "spearman": float(spearmanr(predicted, actual).statistic),
            "kendall": float(kendalltau(predicted, actual).statistic),
            "spearman_top": float(spearmanr(predicted[best], actual[best]).statistic),
            "kendall_top": float(kendalltau(predicted[best], actual[best]).statistic),
            "mae": float(np.mean(np.abs(predicted - actual)))}
