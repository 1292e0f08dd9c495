"""A latency constraint: the measured CPU latency of a network, predicted in closed form.

Why not MACs: on a CPU, equal MACs do not cost equal time. On the 2-core AMD EPYC VM
(``benchmarks/results/latency.md``), a 3x3 conv that keeps 9 to 15 of 16 channels takes as
long as the full one (kernels compute whole SIMD vectors), and the BatchNorm, activation
and add after each conv scale with its output, which MACs do not count. So keep states of
equal MACs differ by a quarter in latency, and a search to a MACs budget is free to pick
the slow one.

An environment prices every step and cannot time the network. NetAdapt (Yang et al., ECCV
2018) measures per-layer tables once per device. We tried that on this VM and found a
layer timed alone a poor guide (its time moved by 2x with what ran before it), so the
model is fitted on whole exported networks instead, with three numbers, so that any
network the engine analyses gets one in a minute::

    seconds = base x (a x vector MACs(keep) / vector MACs(full)
                      + b x vector outputs(keep) / vector outputs(full) + c)

Vector MACs and outputs are those of the conv/linear calls with each channel dim as the
kernels compute it (:func:`_pad`); outputs stand for the memory-bound ops after each call,
and ``c`` is what pruning cannot remove. ``a, b, c >= 0`` (non-negative least squares), so
the price grows with every kept channel, as a budget needs. The fit is on keep states from
one channel per group to the full network, timed in steady state (:mod:`prune_gym.latency`)
in interleaved rounds; its leave-one-out error is kept with it, so that a user sees how
far to trust it (ResNet-56, batch 64: ``benchmarks/results/latency_searched.md``)::

    model = fit_latency_model(net, batch_size=64, threads=1)
    model.save("resnet56_latency.json")
    env = gym.make("DNNGraph-v0", model=..., constraint="latency",
                   latency_model="resnet56_latency.json")
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls

from prune_gym.arguments import check_choice, check_int, check_number
from prune_gym.errors import InvalidArgumentError
from prune_gym.files import write_text_atomic
from prune_gym.keep import round_counts
from prune_gym.latency import RUNTIMES, Timer, as_runtime, evaluating, repeat_batch, torch_threads

__all__ = ["LatencyModel", "fit_latency_model", "load_latency_model", "simd_lanes"]

FORMAT = "prune-gym latency model 1"


def simd_lanes() -> int:
    """float32 lanes of this CPU's widest vector unit that torch uses (8 for AVX2, 16 for
    AVX-512; 4 otherwise, e.g. NEON)."""
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return 16 if "AVX512" in capability else 8 if "AVX2" in capability else 4


def _pad(n: int, multiple: int, full: int) -> int:
    """``n`` channels as the kernels compute them: more than one vector's worth is rounded
    up to whole vectors (never past the layer's full width); up to one vector, kernels for
    narrow layers take the width as it is (measured: 3x3 convs of 1, 4 and 8 channels take
    time in proportion, 9 to 15 of 16 as long as 16)."""
    return n if n <= multiple else min(full, -(-n // multiple) * multiple)


def _features(cost, dims, multiple: int) -> np.ndarray:
    """Vector MACs and vector outputs of the kept ``dims`` of every conv/linear call."""
    macs = outputs = 0
    for term, (d0, d1) in zip(cost.macs_terms, dims):
        p0 = _pad(d0, multiple, term.dim0)
        macs += term.rows * term.numel // (term.dim0 * term.dim1) * p0 * \
            _pad(d1, multiple, term.dim1)
        outputs += term.rows * p0
    return np.array([macs, outputs], dtype=float)


@dataclass(frozen=True)
class LatencyModel:
    """Predicted seconds per forward of one network as a function of its keep state.

    Made by :func:`fit_latency_model`; valid for the network it was fitted on (its group
    sizes are checked), the batch size, thread count, runtime and machine it was measured
    with.
    """

    coefficients: tuple[float, float, float]  # a (vector MACs), b (outputs), c (fixed)
    base_s: float  # measured seconds per forward of the full network
    full_features: tuple[float, float]  # vector MACs and outputs of the full network
    multiple: int  # SIMD lanes: channel dims are padded to this
    group_sizes: tuple[int, ...]  # every channel group of the network, prunable or not
    batch_size: int
    threads: int
    runtime: str = "eager"  # prune_gym.latency.RUNTIMES: how the exported model was run
    round_to: int | None = None  # fitted on counts rounded to this: searches must round alike
    fit: dict = field(default_factory=dict)  # states, r2, errors, machine, torch

    def features(self, cost, dims) -> np.ndarray:
        """The model's inputs for kept ``dims`` (:meth:`~prune_gym.cost.CostModel.kept_dims`),
        as fractions of the full network's, with the constant 1 last."""
        raw = _features(cost, dims, self.multiple)
        return np.append(raw / np.maximum(self.full_features, 1), 1.0)

    def fraction(self, cost, dims) -> float:
        """Predicted latency over the full network's."""
        return float(self.features(cost, dims) @ np.asarray(self.coefficients))

    def price(self, cost, counts=None, masks=None, prefix=None) -> int:
        """Predicted nanoseconds per forward (the engine's metrics are integers)."""
        dims = cost.kept_dims(counts=counts, masks=masks, prefix=prefix)
        return int(self.fraction(cost, dims) * self.base_s * 1e9)

    def check_network(self, net, argument: str = "latency_model") -> None:
        """Refuse a model fitted on another network."""
        sizes = tuple(g.size for g in net.all_groups)
        if sizes != self.group_sizes:
            raise InvalidArgumentError(
                f"{argument} was fitted on a network with channel groups "
                f"{_short(self.group_sizes)}, not this one ({_short(sizes)}); fit one on this "
                "network with prune_gym.fit_latency_model(net)")

    def check_round_to(self, round_to: int | None) -> None:
        """Refuse a search that would visit states the model was not fitted on."""
        if self.round_to is not None and round_to != self.round_to:
            raise InvalidArgumentError(
                f"latency_model was fitted on counts rounded to multiples of {self.round_to}, "
                f"so it prices only such states; search with round_to={self.round_to} (got "
                f"round_to={round_to}), or fit a model without round_to")

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path) -> Path:
        """Write the model as JSON (read back with :func:`load_latency_model`)."""
        return write_text_atomic(json.dumps(self.to_dict(), indent=1) + "\n", path)


def _short(sizes) -> str:
    return f"{list(sizes[:6])}{'...' if len(sizes) > 6 else ''} ({len(sizes)} groups)"


def load_latency_model(source) -> LatencyModel:
    """A :class:`LatencyModel` from itself, its dict, or the JSON file it was saved to."""
    if isinstance(source, LatencyModel):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgumentError(f"latency_model={str(source)!r} is not a file; give the "
                                       "JSON that LatencyModel.save wrote, or a LatencyModel")
        try:
            source = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidArgumentError(f"latency_model={str(path)!r} is not readable JSON "
                                       f"({exc})") from exc
    if not isinstance(source, dict) or source.get("format") != FORMAT:
        raise InvalidArgumentError(
            "latency_model must be a LatencyModel, or the JSON file or dict it was saved to "
            f"(format {FORMAT!r}); got {type(source).__name__}")
    try:
        fields = {k: v for k, v in source.items() if k != "format"}
        for key in ("coefficients", "full_features", "group_sizes"):
            fields[key] = tuple(fields[key])
        return LatencyModel(**fields)
    except (KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"latency_model is missing or has unknown fields ({exc}); "
                                   "save it again with LatencyModel.save") from exc


# -- measuring -----------------------------------------------------------------------------
def _sample_states(net, states: int, multiple: int, round_to: int | None,
                   seed: int) -> list[list[int]]:
    """Keep counts spread over the space a search visits: the full network, its floor,
    uniform widths, and random per-group fractions at random scales. With ``round_to``
    every state is rounded as such a search rounds it; without, half of the random ones are
    rounded to whole vectors (both kinds occur in searches)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([g.size for g in net.groups])

    def rounded(counts, always: bool):
        multiple_ = round_to or (multiple if always else None)
        return round_counts(counts, sizes, multiple_).tolist()

    out = [sizes.tolist(), rounded(np.ones(len(sizes), dtype=np.int64), False)]
    for f in np.linspace(0.15, 0.85, max(2, states // 5)):
        out.append(rounded(np.maximum(1, np.round(sizes * f)).astype(np.int64), False))
    out = list(dict.fromkeys(map(tuple, out)))  # distinct states only: each is timed once
    for _ in range(50 * states):  # a small network may have fewer distinct rounded states
        if len(out) >= states:
            break
        fractions = rng.uniform(0.05, 1.0, len(sizes)) * rng.uniform(0.4, 1.0)
        counts = tuple(rounded(np.clip(np.round(sizes * fractions), 1, sizes).astype(np.int64),
                               len(out) % 2 == 1))
        if counts not in out:
            out.append(counts)
    return [list(k) for k in out]


def _time_states(net, keeps, batch_size, min_time, rounds, seed, runtime, folder,
                 progress) -> np.ndarray:
    """Median seconds per forward of each exported keep state in ``runtime``, every round
    visiting all of them in a new order (so that a slow spell of a shared machine hits them
    alike)."""
    models = [as_runtime(m, net.example_inputs, runtime, folder) for m in
              [net.original_copy()] + [net.export(k) for k in keeps[1:]]]
    inputs = repeat_batch(net.example_inputs, batch_size)
    timers = []
    for m in models:
        with evaluating(m):
            timers.append(Timer(m, inputs, warmup=2, min_time=min_time))
    samples: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    shuffle = random.Random(seed)
    for r in range(rounds):
        shuffle.shuffle(order)
        for i in order:
            with evaluating(models[i]):
                samples[i].append(timers[i].sample())
        if progress:
            print(f"latency model: round {r + 1}/{rounds} of {len(models)} keep states")
    return np.array([statistics.median(s) for s in samples])


def _nnls_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict]:
    coef, _ = nnls(x, y)
    pred = x @ coef
    loo = []
    for i in range(len(y)):  # leave-one-out: how well an unseen state is predicted
        rest = np.arange(len(y)) != i
        c, _ = nnls(x[rest], y[rest])
        loo.append(float(x[i] @ c - y[i]))
    return coef, {
        "r2": float(1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12)),
        "max_abs_error": float(np.abs(pred - y).max()),
        "loo_mean_abs_error": float(np.mean(np.abs(loo))),
        "loo_max_abs_error": float(np.max(np.abs(loo))),
        "errors_are": "fractions of the full network's latency"}


def fit_latency_model(net, batch_size: int = 64, threads: int | None = 1, states: int = 32,
                      rounds: int = 5, min_time: float = 0.05, runtime: str = "eager",
                      round_to: int | None = None, multiple: int | None = None,
                      seed: int = 0, progress: bool = False) -> LatencyModel:
    """Time exported keep states of ``net`` on this machine and fit a :class:`LatencyModel`.

    Args:
        net: the :class:`~prune_gym.network.PrunableNetwork` to model.
        batch_size: the batch the latency is for (inputs repeat the first example).
        threads: torch intra-op threads while timing (``None``: torch's setting).
        states: keep states timed (the full network and one channel per group among
            them); at least 6.
        rounds: timed samples per state; the median is used.
        min_time: seconds one sample lasts at least.
        runtime: how the exported models run (:data:`prune_gym.latency.RUNTIMES`):
            ``"eager"`` (the ``nn.Module``), ``"torchscript"`` or ``"onnx"`` (onnxruntime;
            needs ``pip install onnx onnxscript onnxruntime``). Model the one you deploy.
        round_to: fit on keep states whose counts are rounded to this multiple, as a search
            with the same ``round_to`` visits (environments and ``run_method`` then require
            it). For runtimes whose kernels leave the fast path at other widths (ONNX
            Runtime's), a model of rounded states is the one that fits.
        multiple: SIMD lanes to pad channel dims to (default: :func:`simd_lanes`).
        seed: the random states drawn and the order they are timed in.
        progress: print each round.

    A minute for a CIFAR ResNet-56 at batch 64 on one core; seconds for small networks.
    """
    # what a PrunableNetwork has (the network imports this module, so it is not imported)
    if not all(hasattr(net, name) for name in ("cost", "kept_dims", "all_groups", "export")):
        raise InvalidArgumentError(f"net must be a PrunableNetwork (prune_gym.PrunableNetwork("
                                   f"model, example_inputs)); got {type(net).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    threads = check_int(threads, "threads", minimum=1, optional=True,
                        meaning="torch intra-op threads; None keeps torch's setting")
    states = check_int(states, "states", minimum=6, meaning="keep states to time")
    rounds = check_int(rounds, "rounds", minimum=1, meaning="timed samples per state")
    min_time = check_number(min_time, "min_time", low=0, low_open=False,
                            meaning="seconds one timed sample lasts at least")
    multiple = check_int(multiple, "multiple", minimum=1, optional=True,
                         meaning="SIMD lanes") or simd_lanes()
    seed = check_int(seed, "seed")
    runtime = check_choice(runtime, RUNTIMES, "runtime")
    round_to = check_int(round_to, "round_to", minimum=1, optional=True,
                         meaning="the multiple every kept count is rounded to")
    keeps = _sample_states(net, states, multiple, round_to, seed)
    if len(keeps) < 6:
        raise InvalidArgumentError(f"round_to={round_to} leaves fewer than 6 distinct keep "
                                   "states of this network to fit on; use a smaller round_to")
    with torch_threads(threads) as used, tempfile.TemporaryDirectory() as folder:
        seconds = _time_states(net, keeps, batch_size, min_time, rounds, seed, runtime,
                               folder, progress)
    raw = np.array([_features(net.cost, net.kept_dims(k), multiple) for k in keeps])
    x = np.c_[raw / np.maximum(raw[0], 1), np.ones(len(keeps))]
    y = seconds / seconds[0]
    coef, fit = _nnls_fit(x, y)
    fit.update({
        "states": len(y), "rounds": rounds, "measured": y.round(4).tolist(), "keeps": keeps,
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.backends.cpu.get_cpu_capability()}",
        "torch": torch.__version__})
    return LatencyModel(tuple(float(v) for v in coef), float(seconds[0]),
                        tuple(float(v) for v in raw[0]), multiple,
                        tuple(g.size for g in net.all_groups), batch_size, used, runtime,
                        round_to, fit)
