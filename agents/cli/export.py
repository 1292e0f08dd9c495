"""``export RUN --format F``: the run's pruned model (fine-tuned if ``finetune`` ran) as a file
others can run, with its size and measured CPU latency beside the unpruned model's.

Both models are written in the same format and timed as loaded back from their files (the
ONNX ones through onnxruntime when it is installed), so the comparison is of what a user
deploys. Latency is measured single-threaded by default, interleaved original/pruned so a
busy machine slows both alike (:func:`prune_gym.latency.compare_latency`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from agents.cli.common import (
    FINETUNED,
    model_metadata,
    pick_row,
    positive_int,
    read_run_rows,
    rebuild,
    table,
)
from prune_gym.errors import MissingDependencyError

FORMATS = ("state_dict", "torchscript", "onnx")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "export", help="save a run's pruned model and compare size and latency",
        description="Save the pruned model of a run directory (the fine-tuned one if "
        "'prune-gym finetune' ran) as state_dict (the whole pruned module, torch.save), "
        "torchscript (traced) or onnx (needs: pip install onnx onnxscript; timing the file "
        "needs onnxruntime), and print its size and CPU latency at batch 1 and 64 beside the "
        "unpruned model's. Writes RUN/export.json with the numbers.")
    p.add_argument("run", metavar="RUN", help="a run directory (search --out, or demo)")
    p.add_argument("--format", default="torchscript", choices=FORMATS,
                   help="file format (default torchscript)")
    p.add_argument("--out", default=None,
                   help="the file to write (default RUN/pruned.{pt,ts,onnx})")
    p.add_argument("--method", default=None,
                   help="which row of RUN/results.csv (default: the best feasible one)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads while timing (default 1)")
    p.add_argument("--repeats", type=positive_int, default=15,
                   help="timed samples per model and batch size (default 15)")
    p.set_defaults(fn=run_export)


def _model(path: Path, row: dict, task=None):
    """The row's pruned model: the fine-tuned one if it was saved for this row."""
    from prune_gym.export import load_model, read_metadata

    scored = rebuild(row, task)
    saved = path / FINETUNED
    if saved.is_file():
        meta = read_metadata(saved)
        if meta.get("method") == row["method"] and meta.get("keep") == row["keep"]:
            return scored, load_model(saved), True
    return scored, scored.model, False


def _loaded(path: Path, fallback):
    """The model as loaded back from its file, or ``fallback`` if a runtime is missing."""
    from prune_gym.export import load_model

    try:
        return load_model(path), None
    except MissingDependencyError as exc:
        return fallback, str(exc)


def export_run(run, fmt: str = "torchscript", out=None, *, method: str | None = None,
               threads: int = 1, repeats: int = 15, task=None) -> dict:
    """Export a run's model, time it against the original; the numbers (also in export.json)."""
    from prune_gym.export import SUFFIXES, file_size, save_model
    from prune_gym.latency import compare_latency

    path, rows = read_run_rows(run)
    row = rows[pick_row(rows, method, path / "results.csv")]
    scored, model, finetuned = _model(path, row, task)
    inputs = scored.task.example_inputs
    target = Path(out) if out is not None else path / f"pruned{SUFFIXES[fmt]}"
    save_model(model, target, fmt, inputs,
               metadata=model_metadata(row, finetuned=finetuned, format=fmt))
    with tempfile.TemporaryDirectory() as tmp:
        original_file = save_model(scored.net.original_copy(), Path(tmp) / f"original"
                                   f"{SUFFIXES[fmt]}", fmt, inputs)
        original_size = file_size(original_file)
        original, note = _loaded(original_file, scored.task.model)
        pruned, _ = _loaded(target, model)
        timing = compare_latency(original, pruned, inputs, batch_sizes=(1, 64),
                                 threads=threads, repeats=repeats)
    report = {
        "file": str(target), "format": fmt, "method": row["method"], "task": row["task"],
        "finetuned": finetuned, "size_bytes": file_size(target),
        "original_size_bytes": original_size, "params": row["params"],
        "original_params": scored.net.base_params, "macs": row["macs"],
        "original_macs": scored.net.base_macs, "threads": timing["threads"],
        "timed": "eager PyTorch (" + note + ")" if note else f"the {fmt} files",
        "latency": {str(b): {"original_s": v["original"]["median_s"],
                             "pruned_s": v["pruned"]["median_s"], "ratio": v["ratio"]}
                    for b, v in timing["batches"].items()},
    }
    (path / "export.json").write_text(json.dumps(report, indent=1))
    return report


def print_report(report: dict) -> None:
    lat = report["latency"]
    lines = [["size (bytes)", report["original_size_bytes"], report["size_bytes"],
              report["size_bytes"] / report["original_size_bytes"]],
             ["params", report["original_params"], report["params"],
              report["params"] / report["original_params"]],
             ["MACs", report["original_macs"], report["macs"],
              report["macs"] / report["original_macs"]]]
    for batch, v in lat.items():
        lines.append([f"latency batch {batch} (ms)", 1e3 * v["original_s"], 1e3 * v["pruned_s"],
                      v["ratio"]])
    which = "fine-tuned " if report["finetuned"] else ""
    print(f"exported the {which}{report['method']} model of {report['task']} to "
          f"{report['file']} ({report['format']})")
    print(table(["", "original", "pruned", "ratio"], lines))
    print(f"latency: median of interleaved samples, {report['threads']} thread(s), timing "
          f"{report['timed']}")


def run_export(args: argparse.Namespace) -> int:
    report = export_run(args.run, args.format, args.out, method=args.method,
                        threads=args.threads, repeats=args.repeats)
    print_report(report)
    return 0
