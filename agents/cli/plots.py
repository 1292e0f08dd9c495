"""The run directories' plots, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_plot(history: list[tuple[int, float | None]], path: Path, title: str) -> Path:
    """Best feasible validation accuracy against evaluations spent, as a step line."""
    plt = _pyplot()
    points = [(e, a) for e, a in history if a is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if points:
        xs, ys = zip(*points)
        ax.step(xs, ys, where="post", marker="." if len(xs) < 50 else None)
    else:
        ax.text(0.5, 0.5, "no feasible state found", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel("validation evaluations")
    ax.set_ylabel("best feasible val accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_vs_macs(rows: list[dict[str, Any]], unpruned: dict[str, float], path: Path,
                     title: str) -> Path:
    """Test accuracy against the fraction of MACs kept: one point per method, the unpruned
    model at 1.0, and an arrow from a state to where its fine-tune took it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter([1.0], [unpruned["test_accuracy"]], marker="*", s=160, color="black",
               label="unpruned", zorder=3)
    for i, row in enumerate(rows):
        color = f"C{i % 10}"
        y = row["test_accuracy"]
        ax.scatter([row["macs_ratio"]], [y], color=color, s=50, label=row["method"],
                   zorder=3, marker="o" if row["feasible"] else "x")
        after = row.get("finetuned_test_accuracy")
        if after is not None:
            ax.annotate("", xy=(row["macs_ratio"], after), xytext=(row["macs_ratio"], y),
                        arrowprops={"arrowstyle": "->", "color": color})
            ax.scatter([row["macs_ratio"]], [after], color=color, s=70, marker="D",
                       label=f"{row['method']} fine-tuned", zorder=3)
    budgets = {row["budget"] for row in rows if row["constraint"] == "macs"}
    for b in budgets:
        ax.axvline(b, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("MACs kept (fraction of the unpruned model)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
