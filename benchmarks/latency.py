"""Latency benchmark: are exported pruned models really faster? (issue 9, item 4)

For ResNet-56 and ResNet-20 (``cifar10-resnet{56,20}-v0``, reference weights; needs
``../shared/data``, a task whose files are absent is skipped with its reason), the
baselines ``uniform`` and ``global_magnitude`` at budgets 0.5 and 0.3, and any keep states
given with ``--results FILE.csv`` (``agents/results.py``'s schema: ``task``, ``keep``,
``importance``...): each state is exported (``PrunableNetwork.export``) and its CPU
latency at batch 1 and 64 compared with the original's (:func:`prune_gym.latency.compare_latency`:
eval mode, inference mode, samples of original and pruned interleaved ABBA, medians of
per-round ratios), with torch at 1 thread and at every visible core. Reported beside the
MACs and params reductions: latency reduction ``1 - pruned/original``, and its ratio to
the MACs reduction against the goal of 0.8. Also the exported files' sizes
(:func:`prune_gym.export.save_model`; ONNX when ``onnx`` and ``onnxscript`` are installed).

Diagnostic states tell why a goal is missed: each baseline state with every group's kept
count rounded to the nearest multiple of 8 (whole AVX2 vectors of float32; about the same
MACs, not necessarily within the budget, so its own ratio is what compares), and every
group at one channel (what pruning can never remove: per-layer dispatch, the stem and the
classifier). A sweep of one
3x3 convolution per ResNet stage over kept widths shows the per-layer cost curve behind it.

The machine is shared: timings are medians of interleaved samples, and the spread (IQR of
the per-round ratios) is reported with them. On a shared machine run it with
``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads that spin while a sibling thread waits for a
busy core made one 2-thread ResNet-56 forward at batch 1 take 1.7 s instead of 15 ms on
the 2-core VM of the recorded run. This is a benchmark, not a test: minutes.

With ``--runtime onnx`` (or ``torchscript``) every model is timed as its saved file runs
once loaded back (ONNX: onnxruntime), and ``--latency-model FILE`` (``prune-gym
latency-model``) adds its prediction beside each state it prices.

    python benchmarks/latency.py      # writes benchmarks/results/latency.{md,json}
    python benchmarks/latency.py --results runs/x/results.csv --tasks cifar10-resnet56-v0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import torch  # noqa: E402
from machine_info import describe_machine  # noqa: E402 - beside this script
from torch import nn  # noqa: E402

from prune_gym import PrunableNetwork  # noqa: E402
from prune_gym.errors import PruneGymError  # noqa: E402
from prune_gym.export import FORMATS, SUFFIXES, file_size, load_model, save_model  # noqa: E402
from prune_gym.keep import round_counts  # noqa: E402
from prune_gym.latency import (  # noqa: E402
    RUNTIMES,
    as_runtime,
    compare_latency,
    torch_threads,  # noqa: E402
)
from prune_gym.network import PruningWarning  # noqa: E402
from prune_gym.search import global_magnitude, uniform  # noqa: E402
from prune_gym.tasks import make_task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOAL = 0.8
# what decides how torch's threads behave, recorded with the results
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "GOMP_SPINCOUNT")
BASELINES = {"uniform": uniform, "global_magnitude": global_magnitude}
# one 3x3 conv per CIFAR ResNet stage: (full width, feature map side)
STAGES = ((16, 32), (32, 16), (64, 8))


def load_task(name: str, data_dir: str):
    overrides = {}
    if name.startswith("cifar10-"):  # only what latency needs: weights and one image
        overrides = dict(data_dir=data_dir, max_train=64, max_val=64, max_test=16)
    return make_task(name, **overrides)


def round_to_8(net: PrunableNetwork, keep: list[int]) -> list[int]:
    """Every kept count rounded to the nearest multiple of 8 (``prune_gym.keep.round_counts``,
    as ``round_to=8`` does): about the same MACs, SIMD-friendly widths."""
    return round_counts(keep, [g.size for g in net.groups], 8).tolist()


def states_for(net, task_name: str, budgets, methods, rows) -> list[dict]:
    """The keep states to time: baselines, their diagnostic variants, results.csv rows."""
    states = []
    for budget in budgets:
        for method in methods:
            keep = [int(k) for k in BASELINES[method](net, budget)]
            states.append(dict(method=method, budget=budget, keep=keep, importance=None,
                               kind="baseline"))
            states.append(dict(method=f"{method} x8", budget=budget, keep=round_to_8(net, keep),
                               importance=None, kind="diagnostic"))
    for line, row in rows:
        if row["task"] != task_name:
            continue
        # a count per group, or (ChannelMask agents) the kept channel indices
        counts = [len(k) if isinstance(k, list) else k for k in row["keep"]]
        if len(counts) != len(net.groups) or any(
                k > g.size for k, g in zip(counts, net.groups)):
            print(f"results line {line}: keep does not fit {task_name}'s {len(net.groups)} "
                  "groups; skipped")
            continue
        rounded = ", counts x8" if round_to_8(net, counts) == counts else ""
        if row["constraint"] != "macs":
            rounded += f", {row['constraint']} budget"
        states.append(dict(method=f"{row['method']} (results line {line}{rounded})",
                           budget=row["budget"], keep=row["keep"],
                           importance=row["importance"], kind="results"))
    states.append(dict(method="1 channel per group", budget=None, keep=[1] * len(net.groups),
                       importance=None, kind="diagnostic"))
    return states


def sizes_of(model: nn.Module, example, folder: Path, formats) -> dict:
    """Bytes of each format's file; the reloaded file is checked to run."""
    out = {}
    for fmt in formats:
        try:
            path = save_model(model, folder / f"m{SUFFIXES[fmt]}", fmt, example)
            load_model(path)(example)
            out[fmt] = file_size(path)
        except PruneGymError as exc:
            out[fmt] = None
            print(f"  {fmt}: not written ({str(exc).splitlines()[0][:120]})")
    return out


def bench_task(name: str, args, rows, threads_list, formats) -> tuple[list, list]:
    task = load_task(name, args.data_dir)
    x, y = task.data.train.as_tuple()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        net = task.network(calibration_samples=64)
    original = net.original_copy().eval()
    example = task.example_inputs
    predict = None
    if args.latency_model is not None:
        try:
            net.set_latency_model(args.latency_model)
        except PruneGymError as exc:  # fitted on another task's network
            print(f"  {name}: latency model not used ({str(exc).splitlines()[0][:100]})")
        else:
            if net.latency_model.runtime != args.runtime:
                raise SystemExit(f"--latency-model was fitted with runtime "
                                 f"{net.latency_model.runtime!r}, not --runtime {args.runtime}")
            full = net.metric([g.size for g in net.groups], "latency")

            multiple = net.latency_model.round_to

            def predict(keep, importance):
                """The predicted fraction, for states the model prices (a model of rounded
                states says nothing of the others)."""
                counts = [len(k) if isinstance(k, list) else k for k in keep]
                if multiple and round_counts(counts, [g.size for g in net.groups],
                                             multiple).tolist() != counts:
                    return None
                return net.metric(keep, "latency", importance) / full
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [dict(task=name, method="original", **sizes_of(original, example, Path(tmp),
                                                                formats))]
        results, originals = [], {}
        for state in states_for(net, name, args.budgets, args.methods, rows):
            pruned = net.export(state["keep"], state["importance"]).eval()
            macs = net.macs(state["keep"], state["importance"]) / net.base_macs
            params = net.params(state["keep"], state["importance"]) / net.base_params
            if state["kind"] != "diagnostic":
                sizes.append(dict(task=name, method=state["method"], budget=state["budget"],
                                  **sizes_of(pruned, example, Path(tmp), formats)))
            for threads in threads_list:
                # an onnxruntime session takes torch's thread count when it is loaded
                with torch_threads(threads):
                    if threads not in originals:
                        originals[threads] = as_runtime(original, example, args.runtime, tmp)
                    timed = as_runtime(pruned, example, args.runtime, tmp)
                cmp = compare_latency(originals[threads], timed, example, args.batch_sizes,
                                      threads, warmup=3, repeats=args.repeats,
                                      min_time=args.min_time)
                row = dict(task=name, method=state["method"], kind=state["kind"],
                           budget=state["budget"], keep=state["keep"], threads=cmp["threads"],
                           macs_reduction=1 - macs, params_reduction=1 - params)
                guess = None if predict is None else predict(state["keep"],
                                                             state["importance"])
                if guess is not None:
                    row["predicted"] = {"batch": net.latency_model.batch_size,
                                        "threads": net.latency_model.threads,
                                        "latency_kept": guess}
                for size, r in cmp["batches"].items():
                    row[f"b{size}"] = dict(
                        original_ms=r["original"]["median_s"] * 1e3,
                        pruned_ms=r["pruned"]["median_s"] * 1e3,
                        reduction=r["reduction"], reduction_q25=1 - r["ratio_q75"],
                        reduction_q75=1 - r["ratio_q25"],
                        goal_ratio=r["reduction"] / (1 - macs) if macs < 1 else None)
                results.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "keep"}))
    return results, sizes


def conv_sweep(repeats: int, batch: int) -> list[dict]:
    """Per-layer cost curve: one 3x3 conv (width -> width) per stage, at each kept width,
    against the full width; rounds interleave every width."""
    out = []
    with torch.inference_mode():
        for full, side in STAGES:
            widths = sorted({full, *range(full // 2, full, max(1, full // 16))})
            convs = {w: nn.Conv2d(w, w, 3, padding=1, bias=False).eval() for w in widths}
            inputs = {w: torch.randn(batch, w, side, side) for w in widths}
            for w in widths:
                for _ in range(2):
                    convs[w](inputs[w])
            times = {w: [] for w in widths}
            for r in range(repeats):
                for w in (widths if r % 2 == 0 else widths[::-1]):
                    start = time.perf_counter()
                    convs[w](inputs[w])
                    times[w].append(time.perf_counter() - start)
            for w in widths:
                ratio = statistics.median(t / f for t, f in zip(times[w], times[full]))
                macs = (w / full) ** 2
                out.append(dict(stage_width=full, side=side, width=w, multiple_of_8=w % 8 == 0,
                                macs_ratio=macs, time_ratio=ratio,
                                ms=statistics.median(times[w]) * 1e3,
                                goal_ratio=(1 - ratio) / (1 - macs) if w < full else None))
    return out


def fmt_red(b: dict) -> str:
    return f"{b['reduction']:.2f} [{b['reduction_q25']:.2f}, {b['reduction_q75']:.2f}]"


def fmt_goal(b: dict) -> str:
    if b["goal_ratio"] is None:
        return "-"
    mark = "yes" if b["goal_ratio"] >= GOAL else "no"
    return f"{b['goal_ratio']:.2f} ({mark})"


def markdown(doc: dict) -> str:
    lines = [
        "# Latency of exported pruned models"
        + ("" if doc.get("name", "latency") == "latency" else f" ({doc['name']})"), "",
        f"Machine: {doc['machine']}. Produced by `{doc['command']}` in {doc['wall_s']:.0f} s. "
        f"CPU latency of the exported model run as {doc['settings'].get('runtime', 'eager')} "
        "against the original run alike, eval mode, "
        f"`torch.inference_mode`, batch 1 and 64 (the first validation image repeated), "
        f"{doc['settings']['repeats']} samples each lasting >= {doc['settings']['min_time']} s, "
        "original and pruned interleaved ABBA, each sample after one untimed call (steady "
        "state); figures are medians of the per-round ratios "
        "with their interquartile range in brackets. "
        f"{doc['note']}.", "",
        f"Goal: latency reduction >= {GOAL} x MACs reduction on ResNet-56 "
        "(column `latency / MACs`). Rows `x8` round every group's kept count to the nearest "
        "multiple of 8 (not necessarily within the budget) and `1 channel per group` keeps "
        "one channel everywhere: diagnostic states, not budget results.", "",
    ]
    for threads in doc["settings"]["threads"]:
        lines += [f"## torch threads: {threads}", "",
                  "| task | state | budget | MACs red. | params red. | batch 1 ms (orig -> "
                  "pruned) | latency red. b1 | latency / MACs b1 | batch 64 ms (orig -> pruned) "
                  "| latency red. b64 | latency / MACs b64 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["rows"]:
            if r["threads"] != threads:
                continue
            b1, b64 = r["b1"], r["b64"]
            budget = "-" if r["budget"] is None else f"{r['budget']:g}"
            lines.append(
                f"| {r['task']} | {r['method']} | {budget} | {r['macs_reduction']:.3f} | "
                f"{r['params_reduction']:.3f} | {b1['original_ms']:.2f} -> {b1['pruned_ms']:.2f} "
                f"| {fmt_red(b1)} | {fmt_goal(b1)} | {b64['original_ms']:.1f} -> "
                f"{b64['pruned_ms']:.1f} | {fmt_red(b64)} | {fmt_goal(b64)} |")
        lines.append("")
    lines += ["## Exported file sizes (bytes)", "",
              "| task | state | budget | " + " | ".join(doc["settings"]["formats"]) + " |",
              "|---|---|---|" + "---|" * len(doc["settings"]["formats"])]
    for s in doc["sizes"]:
        budget = "-" if s.get("budget") is None else f"{s['budget']:g}"
        cells = [f"{s[f]:,}" if s.get(f) else "-" for f in doc["settings"]["formats"]]
        lines.append(f"| {s['task']} | {s['method']} | {budget} | " + " | ".join(cells) + " |")
    if doc["missing_formats"]:
        lines += ["", f"Not written: {doc['missing_formats']}."]
    if doc["sweep"]:
        lines += ["", f"## One 3x3 convolution per stage (batch {doc['settings']['sweep_batch']}, "
                  "1 thread): time against the full width", "",
                  "| stage width | map | kept width | x8 | MACs ratio | time ratio | "
                  "time red. / MACs red. |", "|---|---|---|---|---|---|---|"]
        for s in doc["sweep"]:
            goal = "-" if s["goal_ratio"] is None else f"{s['goal_ratio']:.2f}"
            lines.append(f"| {s['stage_width']} | {s['side']}x{s['side']} | {s['width']} | "
                         f"{'yes' if s['multiple_of_8'] else ''} | {s['macs_ratio']:.3f} | "
                         f"{s['time_ratio']:.3f} | {goal} |")
    predicted = [r for r in doc["rows"] if "predicted" in r
                 and r["threads"] == r["predicted"]["threads"]]
    if predicted:
        p = predicted[0]["predicted"]
        fit = doc["latency_model_fit"]
        lines += ["", f"## Latency model (`{doc['settings']['latency_model']}`): predicted "
                  f"against measured latency kept, batch {p['batch']}, {p['threads']} "
                  "thread(s)", "",
                  f"The model was fitted on {fit['states']} keep states ({fit['rounds']} "
                  f"timed rounds) on {fit['machine']}, torch {fit['torch']}: R^2 "
                  f"{fit['r2']:.3f}, leave-one-out error mean {fit['loo_mean_abs_error']:.3f}"
                  f" and max {fit['loo_max_abs_error']:.3f} (fractions of the original's "
                  "latency). Below, its prediction for each state measured above.", "",
                  "| task | state | MACs kept | predicted | measured | error |",
                  "|---|---|---|---|---|---|"]
        for r in predicted:
            kept = 1 - r[f"b{r['predicted']['batch']}"]["reduction"]
            guess = r["predicted"]["latency_kept"]
            lines.append(f"| {r['task']} | {r['method']} | {1 - r['macs_reduction']:.3f} | "
                         f"{guess:.3f} | {kept:.3f} | {guess - kept:+.3f} |")
    if doc["skipped"]:
        lines += ["", "Skipped: " + "; ".join(doc["skipped"])]
    if doc["summary"]:
        lines += ["", "## Summary (computed from the rows above)", ""]
        lines += [f"- {line}" for line in doc["summary"]]
    return "\n".join(lines) + "\n"


def summarise(doc: dict) -> list[str]:
    """Per task and thread count: how many states meet the goal, what rounding to x8 and
    the one-channel floor say."""
    out = []
    keys = dict.fromkeys((r["task"], r["threads"]) for r in doc["rows"])
    for task, threads in keys:
        rows = [r for r in doc["rows"] if r["task"] == task and r["threads"] == threads]
        parts = []
        for b in ("b1", "b64"):
            chosen = [r for r in rows if r["kind"] != "diagnostic"]
            met = sum(r[b]["goal_ratio"] >= GOAL for r in chosen)
            plain = [r[b]["goal_ratio"] for r in rows if r["kind"] == "baseline"]
            x8 = [r[b]["goal_ratio"] for r in rows if r["method"].endswith(" x8")]
            floor = [r[b]["reduction"] for r in rows if r["method"] == "1 channel per group"]
            text = f"batch {b[1:]}: goal met by {met} of {len(chosen)} states"
            if plain and x8:
                text += (f"; latency/MACs median {statistics.median(plain):.2f} as found, "
                         f"{statistics.median(x8):.2f} with counts rounded to x8")
            if floor:
                # with latency = floor + (1 - floor) * MACs kept, latency reduction / MACs
                # reduction is 1 - floor for every state: beyond it only if the rest of the
                # latency falls faster than the MACs
                text += (f"; with one channel per group {1 - floor[0]:.2f} of the original "
                         "latency remains (what channel pruning cannot remove), so latency/"
                         f"MACs above {floor[0]:.2f} needs the rest to fall faster than the "
                         "MACs")
            parts.append(text)
        out.append(f"{task}, {threads} thread(s): " + ". ".join(parts) + ".")
        if threads > 1:  # more threads should never make the original slower
            single = {r["method"]: r for r in doc["rows"] if r["task"] == task
                      and r["threads"] == 1}
            slower = sum(r[b]["original_ms"] > single[r["method"]][b]["original_ms"]
                         for r in rows if r["method"] in single for b in ("b1", "b64"))
            if slower:
                out.append(f"{task}, {threads} thread(s): in {slower} of {2 * len(rows)} "
                           "measurements the original ran slower than with 1 thread: the "
                           "cores were not free, so these rows say little about multi-core "
                           "latency.")
    predicted = [r for r in doc["rows"] if "predicted" in r
                 and r["threads"] == r["predicted"]["threads"]]
    if predicted:
        errors = [abs(r["predicted"]["latency_kept"]
                      - (1 - r[f"b{r['predicted']['batch']}"]["reduction"])) for r in predicted]
        out.append(f"Latency model: predicted latency kept within {statistics.mean(errors):.3f} "
                   f"of the measured on average (largest error {max(errors):.3f}) over "
                   f"{len(errors)} states.")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+",
                        default=["cifar10-resnet56-v0", "cifar10-resnet20-v0"])
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3])
    parser.add_argument("--methods", nargs="+", choices=sorted(BASELINES),
                        default=["uniform", "global_magnitude"])
    parser.add_argument("--results", nargs="*", default=[], type=Path,
                        help="results.csv files whose keep states are timed too")
    parser.add_argument("--data-dir", default=os.environ.get("PRUNE_GYM_DATA")
                        or str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--threads", nargs="+", type=int,
                        default=sorted({1, len(os.sched_getaffinity(0))}))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--min-time", type=float, default=0.05)
    parser.add_argument("--no-sweep", action="store_true", help="skip the conv width sweep")
    parser.add_argument("--sweep-batch", type=int, default=64)
    parser.add_argument("--runtime", default="eager", choices=RUNTIMES,
                        help="how the exported models run: eager PyTorch (default), their "
                        "TorchScript file, or their ONNX file in onnxruntime")
    parser.add_argument("--latency-model", default=None, metavar="FILE",
                        help="a latency model (prune-gym latency-model) of one task's network: "
                        "its prediction is reported beside each measured state of that task")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="latency",
                        help="file stem of the report in --out (default latency: "
                        "latency.md and latency.json)")
    parser.add_argument("--note", default="a shared VM (2 cores, other people's jobs "
                        "running): absolute times drift, interleaved ratios less so")
    args = parser.parse_args()
    if 1 not in args.batch_sizes or 64 not in args.batch_sizes:
        parser.error("--batch-sizes must include 1 and 64 (the table's columns)")
    start = time.perf_counter()
    rows = []
    for csv_path in args.results:
        from prune_gym.results import read_results  # noqa: PLC0415 - only with --results

        rows += [(line, row) for line, row in enumerate(read_results(csv_path), start=2)]
    for _, row in rows:
        if row["task"] not in args.tasks:
            args.tasks.append(row["task"])
    missing = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:  # which formats this installation can write
            try:
                save_model(nn.Identity(), Path(tmp) / f"probe{SUFFIXES[fmt]}", fmt,
                           torch.zeros(1, 1))
            except PruneGymError as exc:
                missing[fmt] = str(exc).split(";")[0]
    formats = [f for f in FORMATS if f not in missing]
    env = {k: os.environ[k] for k in THREAD_ENV if k in os.environ}
    command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                        "python benchmarks/latency.py", shlex.join(sys.argv[1:])]).strip()
    doc = {"machine": describe_machine(), "note": args.note, "command": command,
           "name": args.name,
           "environment": env,
           "settings": {"threads": args.threads, "batch_sizes": args.batch_sizes,
                        "repeats": args.repeats, "min_time": args.min_time, "goal": GOAL,
                        "formats": list(FORMATS), "sweep_batch": args.sweep_batch,
                        "latency_model": args.latency_model, "runtime": args.runtime},
           "latency_model_fit": None if args.latency_model is None else {
               k: v for k, v in json.loads(Path(args.latency_model).read_text())["fit"].items()
               if k not in ("keeps", "measured")},
           "missing_formats": "; ".join(missing.values()), "rows": [], "sizes": [],
           "sweep": [], "skipped": []}
    for name in args.tasks:
        try:
            results, sizes = bench_task(name, args, rows, args.threads, formats)
        except PruneGymError as exc:  # reference data absent: say so and go on
            doc["skipped"].append(f"{name}: {exc}")
            print(f"skipped {name}: {exc}")
            continue
        doc["rows"] += results
        doc["sizes"] += sizes
    if not args.no_sweep:
        with_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        doc["sweep"] = conv_sweep(args.repeats * 2, args.sweep_batch)
        torch.set_num_threads(with_threads)
    doc["wall_s"] = time.perf_counter() - start
    doc["summary"] = summarise(doc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=2))
    text = markdown(doc)
    (args.out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
