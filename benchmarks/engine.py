"""Engine benchmark: how fast the pieces under every environment step are.

For each model: analysis (tracing + verification; targets: ResNet-56 <= 0.5 s,
torchvision ResNet-50 <= 1.5 s), one closed-form cost call, masked apply + restore,
in-place prune + restore, physical export, and evaluation of 1,000 images at a keep state
of about half the MACs: ``Evaluator.evaluate_keep`` (physical path, chosen by its cost
model) against the bare forward of the exported pruned network (the physical limit), and
the masked path against the bare forward of the full-size model (the old ratio).

Timing does not depend on what the images show, so random images of the model's input
size are used; accuracy is reported by ``benchmarks/reference_accuracy.py``.

    python benchmarks/engine.py                 # writes benchmarks/results/engine.{md,json}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from machine_info import describe_machine  # beside this script

from prune_gym import PrunableNetwork
from prune_gym.evaluate import Evaluator
from prune_gym.models import get_model
from prune_gym.network import PruningWarning

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def candidates(images: int) -> list[tuple[str, callable, tuple]]:
    models = [("resnet20 (CIFAR)", lambda: get_model("resnet20"), (3, 32, 32)),
              ("resnet56 (CIFAR)", lambda: get_model("resnet56"), (3, 32, 32))]
    try:
        import torchvision  # noqa: F401

        models += [(f"torchvision {n}", lambda n=n: get_model(f"torchvision/{n}"),
                    (3, 224, 224)) for n in ("resnet18", "resnet50", "mobilenet_v2")]
    except Exception as exc:  # noqa: BLE001 - torchvision absent or broken: say so
        print(f"torchvision models skipped: torchvision does not import here ({exc})")
    return models


def half_macs_keep(net) -> list[int]:
    """The uniform keep state (same fraction per group) closest below half the MACs."""
    for pct in range(100, 0, -1):
        keep = [max(1, g.size * pct // 100) for g in net.groups]
        if net.macs(keep) <= 0.5 * net.base_macs:
            return keep
    return [1 for _ in net.groups]


def bench(name: str, factory, shape: tuple, images: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = factory().eval()
    example = torch.randn(1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        analysis = median_time(lambda: PrunableNetwork(model, example), 5)
        net = PrunableNetwork(model, example)
    rng = np.random.default_rng(0)
    keeps = [[int(rng.integers(1, g.size + 1)) for g in net.groups] for _ in range(50)]
    net.macs(keeps[0])  # rankings computed once, outside the timing
    cost = median_time(lambda: [net.macs(k) for k in keeps], 20) / len(keeps)
    masked = median_time(lambda: (net.apply_masked(keeps[1]), net.restore()), 50)

    def prune_restore():
        with net.pruned(keeps[1]):
            pass

    pruned = median_time(prune_restore, 50)
    export = median_time(lambda: net.export(keeps[2]), 5)

    batch = 500
    if shape[-1] > 64:  # ImageNet-sized: batches of 500 would need tens of GB
        images, batch = min(images, 128), 32
    x = torch.randn(images, *shape)
    y = torch.randint(0, 10, (images,))
    keep = half_macs_keep(net)
    small = net.export(keep).eval()
    auto = Evaluator((x, y), batch_size=batch, cache_size=0)
    masked_ev = Evaluator((x, y), batch_size=batch, cache_size=0, path="masked")

    def forward(m):
        with torch.inference_mode():
            for i in range(0, images, batch):
                m(x[i:i + batch])

    runs = {"full_forward": lambda: forward(net.model),
            "pruned_forward": lambda: forward(small),
            "auto_eval": lambda: auto.evaluate_keep(net, keep),
            "masked_eval": lambda: masked_ev.evaluate_keep(net, keep)}
    for fn in runs.values():
        fn()  # warm-up (and the auto path's one-off timing of its two fixed costs)
    samples = {k: [] for k in runs}  # interleaved, so drifts in machine load hit all alike
    for _ in range(repeats):
        for k, fn in runs.items():
            samples[k].append(median_time(fn, 1))
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratio = statistics.median(p / b for p, b in zip(samples["auto_eval"],
                                                    samples["pruned_forward"]))
    old = statistics.median(m / b for m, b in zip(samples["masked_eval"],
                                                  samples["full_forward"]))
    return {"model": name, "groups": len(net.groups), "excluded": len(net.excluded_groups),
            "macs": net.base_macs, "analysis_s": analysis, "cost_call_ms": cost * 1e3,
            "masked_apply_restore_ms": masked * 1e3, "prune_restore_ms": pruned * 1e3,
            "export_ms": export * 1e3, "keep_macs_ratio": net.macs(keep) / net.base_macs,
            "bare_forward_s": med["full_forward"], "pruned_forward_s": med["pruned_forward"],
            "eval_s": med["auto_eval"], "masked_eval_s": med["masked_eval"],
            "eval_ratio": ratio, "masked_eval_ratio": old,
            "physical_evaluations": auto.physical_evaluations, "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="a shared VM: other processes show in timings")
    parser.add_argument("--models", nargs="*", help="only models whose name contains one of these")
    args = parser.parse_args()
    rows = []
    for name, factory, shape in candidates(args.images):
        if args.models and not any(m in name for m in args.models):
            continue
        rows.append(bench(name, factory, shape, args.images, args.repeats))
        print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows},
                                                     indent=2))
    lines = [
        "# Engine benchmark", "",
        f"Machine: {describe_machine()}. Produced by `python benchmarks/engine.py` (medians; "
        f"{args.repeats} interleaved repeats for the evaluation columns; random images, "
        "1,000 at 32x32 in batches of 500, 128 at 224x224 in batches of 32; "
        f"{args.note}).", "",
        "| model | groups (excluded) | MACs | analysis s | cost call ms | masked apply+restore "
        "ms | prune+restore ms | export ms | keep MACs | eval s | pruned forward s | eval / "
        "pruned forward | masked eval / full forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['excluded']}) | {r['macs']:,} | "
            f"{r['analysis_s']:.2f} | {r['cost_call_ms']:.3f} | "
            f"{r['masked_apply_restore_ms']:.2f} | {r['prune_restore_ms']:.2f} | "
            f"{r['export_ms']:.1f} | {r['keep_macs_ratio']:.3f} | {r['eval_s']:.3f} | "
            f"{r['pruned_forward_s']:.3f} | {r['eval_ratio']:.3f} | "
            f"{r['masked_eval_ratio']:.3f} |")
    (args.out / "engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
