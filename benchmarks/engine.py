"""Engine benchmark: how fast the pieces under every environment step are.

For each model: analysis (tracing + verification), one closed-form cost call, masked
apply + restore, physical export, and evaluation of 1,000 images; plus the ratio of a
full masked evaluation (apply, forward, score, restore) to a bare forward of the same
model on the same images (target <= 1.1: masking must be nearly free).

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
                    (3, 224, 224)) for n in ("resnet18", "mobilenet_v2")]
    except Exception as exc:  # noqa: BLE001 - torchvision absent or broken: say so
        print(f"torchvision models skipped: torchvision does not import here ({exc})")
    return models


def bench(name: str, factory, shape: tuple, images: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = factory().eval()
    example = torch.randn(1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        analysis = median_time(lambda: PrunableNetwork(model, example), 3)
        net = PrunableNetwork(model, example)
    rng = np.random.default_rng(0)
    keeps = [[int(rng.integers(1, g.size + 1)) for g in net.groups] for _ in range(50)]
    net.macs(keeps[0])  # rankings computed once, outside the timing
    cost = median_time(lambda: [net.macs(k) for k in keeps], 20) / len(keeps)
    masked = median_time(lambda: (net.apply_masked(keeps[1]), net.restore()), 50)
    export = median_time(lambda: net.export(keeps[2]), 5)

    x = torch.randn(images, *shape)
    y = torch.randint(0, 10, (images,))
    evaluator = Evaluator((x, y), batch_size=500, cache_size=0)
    keep = keeps[3]

    def bare():
        with torch.inference_mode():
            for i in range(0, images, 500):
                net.model(x[i:i + 500])

    def full():
        evaluator.evaluate_keep(net, keep)

    bare(), full()  # warm-up
    pairs = []  # interleaved, so drifts in machine load hit both alike
    for _ in range(repeats):
        pairs.append((median_time(bare, 1), median_time(full, 1)))
    bare_t = statistics.median(p[0] for p in pairs)
    full_t = statistics.median(p[1] for p in pairs)
    ratio = statistics.median(f / b for b, f in pairs)
    return {"model": name, "groups": len(net.groups), "excluded": len(net.excluded_groups),
            "macs": net.base_macs, "analysis_s": analysis, "cost_call_ms": cost * 1e3,
            "masked_apply_restore_ms": masked * 1e3, "export_ms": export * 1e3,
            "bare_forward_s": bare_t, "masked_eval_s": full_t, "eval_ratio": ratio,
            "images": images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for name, factory, shape in candidates(args.images):
        rows.append(bench(name, factory, shape, args.images, args.repeats))
        print(json.dumps(rows[-1]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "engine.json").write_text(json.dumps({"machine": describe_machine(), "rows": rows},
                                                     indent=2))
    lines = [
        "# Engine benchmark", "",
        f"Machine: {describe_machine()}. Produced by `python benchmarks/engine.py` (medians; "
        f"{args.repeats} interleaved repeats for the evaluation columns; random images).", "",
        "| model | groups (excluded) | MACs | analysis s | cost call ms | masked apply+restore "
        "ms | export ms | eval 1,000 img s | bare forward s | masked eval / bare |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['groups']} ({r['excluded']}) | {r['macs']:,} | "
            f"{r['analysis_s']:.2f} | {r['cost_call_ms']:.3f} | "
            f"{r['masked_apply_restore_ms']:.2f} | {r['export_ms']:.1f} | "
            f"{r['masked_eval_s']:.3f} | {r['bare_forward_s']:.3f} | {r['eval_ratio']:.3f} |")
    (args.out / "engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
