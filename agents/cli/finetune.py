"""``finetune RUN``: the shared knowledge-distillation fine-tune of a run's pruned state.

Every method's state is recovered alike (:func:`prune_gym.finetune.distill`, teacher = the
unpruned model, on the training split), so fine-tuned accuracies compare across methods.
The fine-tuned model is saved in the run directory (``finetuned.pt``, read by ``export``)
and the row of ``results.csv`` gets its test and fine-tuned accuracies.
"""

from __future__ import annotations

import argparse

from agents.cli.common import (
    FINETUNED,
    model_metadata,
    natural_int,
    pick_row,
    positive_int,
    read_run_rows,
    rebuild,
    table,
)
from agents.cli.common import finetune as finetune_state
from agents.cli.progress import Progress

DEFAULT_STEPS = 300


def add_commands(sub) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a run's pruned model (knowledge distillation)",
        description="Fine-tune the pruned state of a run directory with the shared "
        "knowledge-distillation recipe (teacher: the unpruned model; training split), save it "
        f"as RUN/{FINETUNED} and add its accuracies to RUN/results.csv. Validation after the "
        "fine-tune is measured with the model's own BatchNorm statistics; test accuracy is "
        "reported, never used to choose.")
    p.add_argument("run", metavar="RUN", help="a run directory (search --out, or demo)")
    p.add_argument("--steps", type=natural_int, default=DEFAULT_STEPS,
                   help=f"optimiser steps (default {DEFAULT_STEPS})")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default 0.01)")
    p.add_argument("--method", default=None,
                   help="which row of RUN/results.csv (default: the best feasible one)")
    p.add_argument("--test-samples", type=positive_int, default=None,
                   help="score on the first N test images (default all)")
    p.set_defaults(fn=run_finetune)


def finetune_run(run, *, steps: int = DEFAULT_STEPS, batch_size: int = 64, lr: float = 0.01,
                 method: str | None = None, test_samples: int | None = None, task=None) -> dict:
    """Fine-tune a run's state, save the model and update ``results.csv``; the updated row."""
    from prune_gym.export import save_model
    from prune_gym.results import write_results

    path, rows = read_run_rows(run)
    index = pick_row(rows, method, path / "results.csv")
    row = rows[index]
    scored = rebuild(row, task)
    with Progress(f"fine-tune {row['method']}", total=steps, unit="step") as bar:
        scores = finetune_state(scored, row, steps, batch_size=batch_size, lr=lr,
                                test_samples=test_samples,
                                progress=lambda s, n, loss: bar.update(s, f"loss {loss:.3f}"))
    seconds = scores.pop("finetune_s")
    rows[index] = {**row, **scores}
    save_model(scored.model, path / FINETUNED, "state_dict", scored.task.example_inputs,
               metadata=model_metadata(row, finetune_steps=steps, finetune_lr=lr,
                                       finetune_batch_size=batch_size,
                                       finetuned_val_accuracy=scores["finetuned_val_accuracy"]))
    write_results(path / "results.csv", rows)
    return {**rows[index], "finetune_s": seconds}


def run_finetune(args: argparse.Namespace) -> int:
    row = finetune_run(args.run, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       method=args.method, test_samples=args.test_samples)
    print(f"{row['method']} on {row['task']}: {row['finetune_steps']} steps of "
          f"knowledge distillation in {row['finetune_s']:.1f} s")
    print(table(["", "val acc", "test acc"],
                [["before", row["val_accuracy"], row["test_accuracy"]],
                 ["after", row["finetuned_val_accuracy"], row["finetuned_test_accuracy"]]]))
    print(f"saved {args.run}/{FINETUNED}; next: prune-gym export {args.run} --format "
          "torchscript")
    return 0
