"""Measured inference latency of a model, and of a pruned model against its original.

Why medians of repeated samples, and why interleaving: MACs say what pruning removes,
latency says what a user gets, and on a shared machine any one timing can be hit by
someone else's process. Each sample times enough calls to last ``min_time`` (short calls
are dominated by timer and dispatch noise), the figure is the median sample with its
interquartile range, and :func:`compare_latency` alternates original and pruned samples
(ABBA order) so that a slow spell of the machine hits both alike; its ratio is the median
of the per-round ratios. Each sample is steady state, as a deployed model runs: it starts
with one untimed call, since the first call after another model's inherits that model's
memory allocator and cache state (on the 2-core VM, ResNet-56 at batch 64 took 310-360 ms
in a call after another model's and 260 ms with the allocator's page recycling tuned).

Every measurement is inference as deployed: eval mode (the model's own flags are put back
afterwards), ``torch.inference_mode``, a fixed torch thread count (recorded), and inputs
made by repeating the first example to each batch size.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from prune_gym.arguments import check_choice, check_int, check_number
from prune_gym.errors import InvalidArgumentError
from prune_gym.export import SUFFIXES, as_inputs, load_model, save_model

__all__ = ["RUNTIMES", "Timer", "as_runtime", "compare_latency", "evaluating", "measure_latency",
           "repeat_batch", "torch_threads"]

# how an exported model is run: as the nn.Module itself, as its TorchScript file, or as its
# ONNX file in onnxruntime (what a deployment without Python's torch typically runs)
RUNTIMES = ("eager", "torchscript", "onnx")

DEFAULT_BATCH_SIZES = (1, 64)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode, every submodule's own training flag put back on exit.

    A frozen TorchScript module (``torch.jit.freeze``) has no flag: it is inference-only.
    """
    flags = [(m, m.training) for m in model.modules() if hasattr(m, "training")]
    if hasattr(model, "training"):
        model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """torch's intra-op thread count set to ``n`` (``None``: as it is), restored on exit."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def as_runtime(model: nn.Module, example_inputs, runtime: str, folder) -> nn.Module:
    """``model`` as ``runtime`` runs it: itself (``"eager"``), or written to ``folder`` with
    :func:`~prune_gym.export.save_model` and loaded back (``"torchscript"``, ``"onnx"``: an
    onnxruntime session with torch's current thread count)."""
    runtime = check_choice(runtime, RUNTIMES, "runtime")
    if runtime == "eager":
        return model
    folder = Path(folder)
    path = folder / f"model{len(list(folder.iterdir()))}{SUFFIXES[runtime]}"
    return load_model(save_model(model, path, runtime, example_inputs))


def repeat_batch(inputs: tuple, size: int) -> tuple:
    return tuple(t[:1].expand(size, *t.shape[1:]).contiguous() for t in inputs)


class Timer:
    """Times one model on one batch: ``calls`` forwards per sample, seconds per call."""

    def __init__(self, model, inputs: tuple, warmup: int, min_time: float):
        self.model, self.inputs = model, inputs
        self.cuda = any(t.is_cuda for t in inputs)
        self.calls = 1
        once = math.inf
        for _ in range(max(1, warmup)):
            once = min(once, self._run())
        self.calls = max(1, math.ceil(min_time / max(once, 1e-9)))

    def _run(self) -> float:
        gc_was = gc.isenabled()
        gc.disable()
        try:
            with torch.inference_mode():
                if self.cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(self.calls):
                    self.model(*self.inputs)
                if self.cuda:
                    torch.cuda.synchronize()
                return (time.perf_counter() - start) / self.calls
        finally:
            if gc_was:
                gc.enable()

    def sample(self) -> float:
        """Seconds per call in steady state: one untimed call first, because the first call
        after another model's pays for that model's allocator and cache state."""
        with torch.inference_mode():
            self.model(*self.inputs)
        return self._run()


def _quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    if len(samples) == 1:
        return (samples[0],) * 3
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, statistics.median(samples), q3


def _stats(samples: Sequence[float], calls: int, batch: int) -> dict:
    q1, median, q3 = _quartiles(samples)
    return {"median_s": median, "q25_s": q1, "q75_s": q3, "iqr_s": q3 - q1,
            "per_image_s": median / batch, "samples": len(samples), "calls_per_sample": calls}


def _check(model, name: str, example_inputs, batch_sizes, threads, warmup, repeats,
           min_time):
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"{name} must be a torch.nn.Module; got "
                                   f"{type(model).__name__}")
    inputs = as_inputs(example_inputs)
    if isinstance(batch_sizes, (int, str)) or not isinstance(batch_sizes, Sequence) \
            or not batch_sizes:
        raise InvalidArgumentError(f"batch_sizes must be a non-empty sequence of integers >= 1, "
                                   f"e.g. (1, 64); got {batch_sizes!r}")
    sizes = [check_int(b, "batch_sizes", minimum=1, meaning="a batch size") for b in batch_sizes]
    if len(set(sizes)) != len(sizes):
        raise InvalidArgumentError(f"batch_sizes={batch_sizes!r} repeats a size; give each "
                                   "once")
    threads = check_int(threads, "threads", minimum=1, optional=True,
                        meaning="torch intra-op threads; None keeps torch's setting")
    warmup = check_int(warmup, "warmup", minimum=0)
    repeats = check_int(repeats, "repeats", minimum=1, meaning="timed samples per batch size")
    min_time = check_number(min_time, "min_time", low=0, low_open=False,
                            meaning="seconds one timed sample lasts at least")
    return inputs, sizes, threads, warmup, repeats, min_time


def _header(threads: int) -> dict:
    return {"threads": threads, "eval_mode": True, "inference_mode": True,
            "torch": torch.__version__}


def measure_latency(model: nn.Module, example_inputs,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    threads: int | None = None, warmup: int = 3, repeats: int = 15,
                    min_time: float = 0.02) -> dict:
    """Seconds per forward of ``model`` at each batch size (median and IQR of samples).

    Args:
        model: any ``nn.Module`` (eager, TorchScript, or :func:`~prune_gym.export.load_model`'s
            ONNX runner); run in eval mode, its training flags restored afterwards.
        example_inputs: one batch it takes; its first example is repeated to each size.
        batch_sizes: the batch sizes to time.
        threads: torch intra-op threads for the measurement (``None``: torch's current
            setting); torch's setting is restored afterwards.
        warmup: untimed calls first (at least one: the fastest picks the calls per sample).
        repeats: timed samples per batch size.
        min_time: seconds one sample lasts at least (enough calls are made).

    Returns:
        A dict with ``threads``, ``eval_mode``, ``inference_mode``, ``torch`` and
        ``batches``, which maps each batch size to its ``median_s``, ``q25_s``, ``q75_s``,
        ``iqr_s``, ``per_image_s``, ``samples`` and ``calls_per_sample``.
    """
    inputs, sizes, threads, warmup, repeats, min_time = _check(
        model, "model", example_inputs, batch_sizes, threads, warmup, repeats, min_time)
    with torch_threads(threads) as used, evaluating(model):
        out = _header(used)
        out["batches"] = {}
        for size in sizes:
            timer = Timer(model, repeat_batch(inputs, size), warmup, min_time)
            samples = [timer.sample() for _ in range(repeats)]
            out["batches"][size] = _stats(samples, timer.calls, size)
    return out


def compare_latency(original: nn.Module, pruned: nn.Module, example_inputs,
                    batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                    threads: int | None = None, warmup: int = 3, repeats: int = 15,
                    min_time: float = 0.02) -> dict:
    """Latency of ``pruned`` against ``original``, their samples interleaved.

    Arguments are those of :func:`measure_latency` (both models take ``example_inputs``).

    Returns:
        The header of :func:`measure_latency`, and in ``batches`` per batch size the
        ``original`` and ``pruned`` statistics, ``ratio`` (the median of the per-round
        pruned / original ratios), ``ratio_q25``, ``ratio_q75`` and ``reduction``
        (1 - ratio).
    """
    inputs, sizes, threads, warmup, repeats, min_time = _check(
        original, "original", example_inputs, batch_sizes, threads, warmup, repeats, min_time)
    _check(pruned, "pruned", example_inputs, sizes, threads, warmup, repeats, min_time)
    with torch_threads(threads) as used, evaluating(original), evaluating(pruned):
        out = _header(used)
        out["batches"] = {}
        for size in sizes:
            batch = repeat_batch(inputs, size)
            timers = (Timer(original, batch, warmup, min_time),
                      Timer(pruned, batch, warmup, min_time))
            times: tuple[list[float], list[float]] = ([], [])
            for r in range(repeats):
                order = (0, 1) if r % 2 == 0 else (1, 0)  # ABBA: neither always goes first
                for i in order:
                    times[i].append(timers[i].sample())
            q1, ratio, q3 = _quartiles([p / o for o, p in zip(*times)])
            out["batches"][size] = {
                "original": _stats(times[0], timers[0].calls, size),
                "pruned": _stats(times[1], timers[1].calls, size),
                "ratio": ratio, "ratio_q25": q1, "ratio_q75": q3, "reduction": 1.0 - ratio}
    return out
