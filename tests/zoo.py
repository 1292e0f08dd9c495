"""The model zoo check: prune-gym on CNN libraries nobody here wrote (timm, torchvision).

Each architecture is built with random weights (nothing is downloaded), analysed on one
64x64 input, pruned to half of every prunable group, exported and measured: the export
must run and keep the output shape, its real parameter count must be what the cost model
says, FlopCounterMode's MACs must be within 2 % of it (they are exact), and the user's
model must be untouched. The outcome per architecture is one of

- ``pruned``: every group found is prunable;
- ``pruned, excluded``: some groups are excluded, each with its reason (the share of the
  MACs the prunable groups control is reported beside it);
- ``refused``: the analysis raised a :class:`~prune_gym.errors.PruneGymError` with a reason.

``python -m tests.zoo`` (in the extras environment, ``make test-extras`` builds it) writes
``benchmarks/results/zoo.json`` and the table in ``docs/zoo.md``; ``tests/test_zoo.py``
checks every architecture against that record, so the table cannot go stale.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from prune_gym import PrunableNetwork
from prune_gym.errors import PruneGymError
from prune_gym.network import PruningWarning
from prune_gym.verify import measure

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "zoo.json"
PAGE = ROOT / "docs" / "zoo.md"
INPUT = (1, 3, 64, 64)
TIME_LIMIT = 90  # seconds per architecture: analysis, export and measurement

# the smallest variant of each major CNN family (timm names)
TIMM = ("resnet18", "resnet26", "resnext26ts", "seresnext26ts", "regnetx_002", "regnety_002",
        "efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0", "mobilenetv2_050",
        "mobilenetv3_small_050", "mobilenetv3_large_100", "mixnet_s", "skresnet18",
        "res2net50_14w_8s", "res2next50", "cspresnet50", "cspdarknet53", "cs3darknet_s",
        "darknet17", "densenet121", "dpn48b", "ghostnet_050", "convnext_atto", "vgg11_bn",
        "repvgg_a0", "rexnet_100", "hrnet_w18_small", "fbnetc_100", "mnasnet_small",
        "tinynet_e", "lcnet_050", "spnasnet_100", "dla34", "ese_vovnet19b_dw", "resnest14d",
        "gernet_s", "selecsls42b", "nf_resnet26")
TORCHVISION = ("resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small",
               "efficientnet_b0", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5",
               "squeezenet1_1", "densenet121", "mnasnet0_5", "googlenet", "alexnet",
               "convnext_tiny")
ARCHITECTURES = [("timm", n) for n in TIMM] + [("torchvision", n) for n in TORCHVISION]


def build(library: str, name: str) -> torch.nn.Module:
    """A randomly initialised model with 10 classes (no weights are downloaded)."""
    torch.manual_seed(0)
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10).eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=10).eval()


def _short(reason: str) -> str:
    """A reason without its per-layer details, for grouping in the table."""
    for cut in (" (", ", whose", ":"):
        reason = reason.split(cut)[0]
    return reason


def check(library: str, name: str) -> dict:
    """Analyse, prune to half of every group, export and measure one architecture.

    Returns the record of its outcome; raises AssertionError if the contract is broken.
    """
    model = build(library, name)
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(*INPUT, generator=torch.Generator().manual_seed(0))
    row = {"library": library, "model": name}
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PruningWarning and the libraries' own
            net = PrunableNetwork(model, x)
    except PruneGymError as exc:
        row.update(status="refused", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        return row
    row["analysis_s"] = round(time.perf_counter() - start, 2)
    keep = [max(1, g.size // 2) for g in net.groups]
    pruned = net.export(keep).eval()
    out, macs, params = measure(pruned, (x,))
    assert tuple(out.shape) == net.output_shape, name
    assert params == sum(p.numel() for p in pruned.parameters()) == net.params(keep), name
    assert abs(macs - net.macs(keep)) <= 0.02 * macs, (name, macs, net.macs(keep))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items()), f"{name} was modified"
    reasons = sorted({_short(g.reason) for g in net.excluded_groups if g.reason})
    row.update(status="pruned, excluded" if net.excluded_groups else "pruned",
               groups=len(net.all_groups), prunable=len(net.groups),
               controlled=round(1 - net.min_ratio(), 3),
               half_macs=round(net.macs(keep) / net.base_macs, 3),
               macs_error=abs(macs - net.macs(keep)) / macs, reasons=reasons)
    return row


def _table(rows: list[dict]) -> list[str]:
    lines = ["| library | model | result | prunable groups | MACs the groups control | "
             "MACs at half of every group | analysis s | why excluded or refused |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "refused":
            lines.append(f"| {r['library']} | {r['model']} | refused | | | | | "
                         f"{r['reason'].replace('|', '/')} |")
            continue
        why = "; ".join(r["reasons"])
        lines.append(f"| {r['library']} | {r['model']} | {r['status']} | "
                     f"{r['prunable']}/{r['groups']} | {r['controlled']:.1%} | "
                     f"{r['half_macs']:.1%} | {r['analysis_s']:.2f} | {why} |")
    return lines


def write(rows: list[dict]) -> None:
    """The record (JSON) and the docs page with its table."""
    import timm
    import torchvision

    versions = (f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                f"timm {timm.__version__}, Python {platform.python_version()}")
    RECORD.write_text(json.dumps({"versions": versions, "rows": rows}, indent=1) + "\n")
    counts = {s: sum(r["status"] == s for r in rows)
              for s in ("pruned", "pruned, excluded", "refused")}
    PAGE.write_text("\n".join([
        "# The model zoo", "",
        "prune-gym on CNN libraries nobody here wrote: the smallest variant of each major "
        "family of [timm](https://github.com/huggingface/pytorch-image-models) and "
        "torchvision, randomly initialised (nothing is downloaded), analysed on one 64x64 "
        "input and pruned to half of every prunable group. For every architecture that is "
        "not refused, the export runs and keeps the output shape, its parameter count is "
        "exactly the cost model's, FlopCounterMode's MACs are within 2 % of it (exact, in "
        "fact), and the model given is untouched. `tests/test_zoo.py` checks all of it and "
        "compares each outcome with this table (`make test-extras`); `python -m tests.zoo` "
        "in that environment regenerates it.", "",
        f"{len(rows)} architectures: {counts['pruned']} pruned with every group prunable, "
        f"{counts['pruned, excluded']} pruned with some groups excluded (each with its "
        f"reason), {counts['refused']} refused with a stated reason; none wrong, none "
        f"hanging. {versions}.", "",
        "*MACs the groups control* is the share of the network's MACs that pruning can "
        "remove: one minus what is left when every prunable group keeps one channel "
        "(`net.describe()` prints it). It says what a count of groups cannot: MixNet's "
        "mixed-kernel blocks and SKNet's selective-kernel attention are fixed by their "
        "splits, so most of those networks' MACs stay.", "",
        *_table(rows), "",
        "Why groups are excluded:", "",
        "- *its channels pass through a channel split / slice / a write into part of the "
        "channels*: `torch.split`, `chunk`, `x[:, a:b]` and `x[:, a:b] += ...` have sizes "
        "fixed by the model's code (a CSP stage's `split`, Res2Net's scales, MixNet's kernel "
        "split, RexNet's and GhostNet's partial residuals, DPN's dual path), so the channels "
        "on either side cannot change in number. The group search stops there (before, it "
        "followed them with wrong offsets, or never ended on RexNet); the groups that reach "
        "the op are excluded naming it, the others prune as usual.",
        "- *pruning it breaks the forward* / *the masked and the physically pruned model "
        "disagree*: verification's trial prune caught a coupling Torch-Pruning gets wrong "
        "(ConvNeXt's layer-scale parameters, SKNet's attention `view`, ResNeSt's radix "
        "split).", "",
        "Refused: Torch-Pruning's own tracing raises on CS3-Darknet and ShuffleNetV2 (its "
        "concat and reshape index mappings), and NF-ResNet's weight-standardised convs "
        "(a gain per output channel that Torch-Pruning does not know) fail every trial.", "",
    ]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="only these model names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for library, name in ARCHITECTURES:
        if args.models and name not in args.models:
            continue
        rows.append(check(library, name))
        print(json.dumps(rows[-1]), flush=True)
    if not args.models:
        write(rows)


if __name__ == "__main__":
    warnings.simplefilter("ignore", PruningWarning)
    main()
