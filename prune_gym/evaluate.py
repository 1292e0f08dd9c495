"""Evaluator: accuracy and loss of a (masked or pruned) model on a fixed validation set.

The validation set is preloaded as tensors once, so an evaluation is nothing but batched
forwards: an environment step should cost little more than the forward it contains. A keep
state is evaluated on the physically pruned network (pruned in place, then put back)
whenever the cost model predicts that is cheaper than the masked full-size one, which is
almost always: the masked network pays for every pruned channel. Both compute the same
function (verification checks it on every analysed network), so the choice changes the
cost, never the result beyond float rounding. Validation data must be held out of the
training split; the test split is for reporting.
"""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.arguments import check_callable, check_choice, check_int
from prune_gym.errors import DataError, InvalidArgumentError

# BatchNorm recalibration when training data is at hand (bn_recalibration=None): without
# it, pruned states keep the unpruned statistics, score near chance and PPO learns states
# worse than random ones; with 4 batches of 64 it beats them
# (benchmarks/results/reward_signal.md).
DEFAULT_BN_BATCHES = 4


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in [0, 1] and mean cross-entropy (NaN when a user callable evaluates)."""

    accuracy: float
    loss: float = math.nan


def as_tensors(data, argument: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` tensors from a pair of tensors/arrays or an iterable of ``(x, y)`` batches."""
    if data is None:
        raise DataError(f"{argument} is required: pass (x, y) tensors or a DataLoader")
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], tuple):
        x, y = data
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    else:
        try:
            batches = list(data)
            x = torch.cat([torch.as_tensor(b[0]) for b in batches])
            y = torch.cat([torch.as_tensor(b[1]) for b in batches])
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{argument} must be (x, y) tensors or an iterable of (x, y) "
                            f"batches such as a DataLoader ({exc})") from exc
    if len(x) == 0:
        raise DataError(f"{argument} is empty: a validation set needs at least one sample")
    if len(x) != len(y):
        raise DataError(f"{argument} has {len(x)} inputs but {len(y)} labels")
    if y.dtype.is_floating_point or y.dim() != 1:
        raise DataError(f"{argument} labels must be a 1-D integer tensor of class indices; got "
                        f"dtype {y.dtype} and shape {tuple(y.shape)}")
    return x.float(), y.long()


class KeepCache:
    """Results remembered by keep state (least recently used dropped first).

    Keyed by the packed kept-channel masks, so a state given as counts, indices or masks
    hits the same entry.
    """

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[bytes, EvalResult] = OrderedDict()

    @staticmethod
    def key(masks: list[np.ndarray]) -> bytes:
        return np.packbits(np.concatenate(masks)).tobytes() if masks else b""

    def get(self, key: bytes) -> EvalResult | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def clear(self) -> None:
        self._entries.clear()

    def put(self, key: bytes, result: EvalResult) -> None:
        if self.size:
            self._entries[key] = result
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> None:
    """Re-estimate BatchNorm running statistics of ``model`` in place on inputs ``x``.

    After pruning, the stored statistics describe channels' inputs that no longer exist;
    re-estimating them on a few training batches recovers most of the lost accuracy at no
    training cost (EagleEye, Li et al. 2020). Only BatchNorm layers change.
    """
    norms = _batchnorms(model)
    modes = [(m, m.momentum, m.training) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    for m, momentum, training in modes:
        m.momentum = momentum
        m.train(training)


PATHS = ("auto", "physical", "masked")


class _PathModel:
    """Predicts whether a keep state is cheaper to evaluate pruned in place or masked.

    An evaluation's forward work scales with the MACs of the network it runs; the two
    paths differ only in that and in their fixed cost (pruning in place and putting back
    vs. zeroing and copying back). Both are measured once for a network: the fixed costs
    directly, the seconds per MAC from the first evaluation. After that the choice is a
    closed-form comparison, the same for the same keep state for the rest of the run.
    """

    def __init__(self, net, masks: list[np.ndarray]):
        self.net = weakref.ref(net)

        def fixed_cost(context) -> float:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                with context(masks):
                    pass
                times.append(time.perf_counter() - start)
            return min(times)

        self.extra = fixed_cost(net.pruned) - fixed_cost(net.masked)
        self.seconds_per_mac: float | None = None

    def physical(self, macs: int, base_macs: int) -> bool:
        if self.seconds_per_mac is None:
            return True  # the first evaluation measures the forward; pruned is the likely winner
        return self.extra < self.seconds_per_mac * (base_macs - macs)

    def observe(self, seconds: float, macs: int) -> None:
        if self.seconds_per_mac is None and macs > 0:
            self.seconds_per_mac = seconds / macs


class Evaluator:
    """Evaluates models on a fixed validation subset, optionally after BN recalibration.

    Args:
        val_data: ``(x, y)`` held out of the training split, or a DataLoader of it.
        max_samples: evaluate on the first ``max_samples`` samples only (a fixed subset).
        batch_size: forward batch size (a speed setting: results do not depend on it).
        train_data: training ``(x, y)`` or loader; needed for BatchNorm recalibration.
        bn_recalibration: number of training batches over which BatchNorm statistics are
            re-estimated before each evaluation (EagleEye; 0 = off). The statistics are
            restored afterwards: the evaluated model is left as it was.
        bn_batch_size: samples per recalibration batch (train-mode BatchNorm statistics
            depend on it, so it is its own setting, not ``batch_size``).
        fn: a user callable ``fn(model) -> float`` that replaces accuracy entirely.
        device: where to evaluate (``"cpu"`` by default).
        num_threads: torch intra-op threads during evaluation (default: leave as is).
        cache_size: keep states whose result is remembered (0 = no cache), for one network
            at a time: evaluating another network's keep states starts the cache afresh.
            Call :meth:`clear_cache` after changing a network's weights.
        path: how :meth:`evaluate_keep` runs a keep state: ``"auto"`` (the physically
            pruned network whenever the cost model predicts it is cheaper), ``"physical"``
            or ``"masked"``. All three give the same results up to float rounding.
    """

    def __init__(self, val_data=None, *, max_samples: int | None = None, batch_size: int = 500,
                 train_data=None, bn_recalibration: int = 0, bn_batch_size: int = 64,
                 fn: Callable[[nn.Module], float] | None = None, device: str = "cpu",
                 num_threads: int | None = None, cache_size: int = 4096, path: str = "auto"):
        check_callable(fn, "fn", "fn(model) -> float")
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        max_samples = check_int(max_samples, "max_samples", minimum=1, optional=True)
        num_threads = check_int(num_threads, "num_threads", minimum=1, optional=True)
        bn_batch_size = check_int(bn_batch_size, "bn_batch_size", minimum=1)
        bn_recalibration = check_int(bn_recalibration, "bn_recalibration",
                                     meaning="batches of training data")
        cache_size = check_int(cache_size, "cache_size", meaning="keep states remembered")
        if bn_recalibration and train_data is None:
            raise InvalidArgumentError("bn_recalibration > 0 needs train_data (batches from "
                                       "the training split to re-estimate BatchNorm on)")
        self.path = check_choice(path, PATHS, "path")
        self.fn = fn
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.bn_recalibration = bn_recalibration
        self.bn_batch_size = bn_batch_size
        self._cache = KeepCache(cache_size)
        self._cache_net: weakref.ref | None = None  # the network the cached results are of
        self._path_model: _PathModel | None = None
        self.evaluations = 0
        self.physical_evaluations = 0
        self.x = self.y = None
        if fn is None or val_data is not None:
            x, y = as_tensors(val_data, "val_data")
            if max_samples is not None:
                x, y = x[:max_samples], y[:max_samples]
            self.x, self.y = x.to(self.device), y.to(self.device)
        self.train_x = None
        if bn_recalibration:
            tx, _ = as_tensors(train_data, "train_data")
            self.train_x = tx[: self.bn_recalibration * self.bn_batch_size].to(self.device)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_path_model"] = None  # machine timings (and a weak reference): re-measured
        state["_cache_net"] = None  # the copy's network is another object: its cache restarts
        return state

    def check_model(self, model: nn.Module) -> None:
        """Raise DataError unless the model maps the validation data to finite class scores."""
        if self.x is None:
            return
        x = self.x[: min(len(self.x), self.batch_size)]
        was_training = model.training
        with torch.inference_mode():
            try:
                out = model.eval()(x)
            except Exception as exc:  # noqa: BLE001
                raise DataError(f"val_data inputs of shape {tuple(x.shape[1:])} do not fit the "
                                f"model ({type(exc).__name__}: {exc})") from exc
            finally:
                model.train(was_training)
        if out.dim() != 2:
            raise DataError(f"the model outputs shape {tuple(out.shape)} on val_data; "
                            "expected (batch, num_classes) logits")
        top = int(self.y.max())
        if top >= out.shape[1] or int(self.y.min()) < 0:
            raise DataError(f"val_data labels span [{int(self.y.min())}, {top}] but the model "
                            f"has {out.shape[1]} outputs; labels must be in "
                            f"[0, {out.shape[1] - 1}]")
        if not torch.isfinite(out).all():
            raise DataError("the model's outputs on val_data are not finite (NaN or inf); "
                            "check the weights and the input normalisation")

    def recalibrate(self, model: nn.Module) -> None:
        """Re-estimate ``model``'s BatchNorm statistics permanently, exactly as an evaluation
        with ``bn_recalibration`` does (same batches), e.g. for an exported model."""
        if self.train_x is not None:
            recalibrate_batchnorm(model, self.train_x, self.bn_batch_size)

    def _recalibrate(self, model: nn.Module) -> list:
        """Re-estimate BatchNorm statistics; return what is needed to put them back."""
        saved = [(m, m.momentum, m.training, m.running_mean.clone(), m.running_var.clone(),
                  m.num_batches_tracked.clone()) for m in _batchnorms(model)]
        recalibrate_batchnorm(model, self.train_x, self.bn_batch_size)
        return saved

    @staticmethod
    def _put_back(saved: list) -> None:
        with torch.no_grad():
            for m, momentum, training, mean, var, count in saved:
                m.momentum = momentum
                m.train(training)
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)

    def evaluate(self, model: nn.Module) -> EvalResult:
        """Evaluate ``model`` in eval mode; its mode and BatchNorm statistics are put back."""
        self.evaluations += 1
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        was_training = model.training
        model.to(self.device).eval()
        saved = self._recalibrate(model) if self.bn_recalibration else []
        try:
            if self.fn is not None:
                return EvalResult(float(self.fn(model)))
            correct, loss = 0, 0.0
            with torch.inference_mode():
                for i in range(0, len(self.x), self.batch_size):
                    out = model(self.x[i:i + self.batch_size])
                    y = self.y[i:i + self.batch_size]
                    correct += int((out.argmax(1) == y).sum())
                    loss += float(F.cross_entropy(out, y, reduction="sum"))
            return EvalResult(correct / len(self.x), loss / len(self.x))
        finally:
            self._put_back(saved)
            model.train(was_training)
            torch.set_num_threads(threads)

    def _physical(self, net, masks: list[np.ndarray]) -> tuple[bool, int]:
        """Whether to evaluate ``masks`` pruned in place, and their MACs."""
        macs = net.macs(masks)
        if self.path != "auto" or macs >= net.base_macs:
            return self.path == "physical" and macs < net.base_macs, macs
        model = self._path_model
        if model is None or model.net() is not net:
            model = self._path_model = _PathModel(net, masks)
        return model.physical(macs, net.base_macs), macs

    def clear_cache(self) -> None:
        """Forget every remembered result (after the network's weights changed)."""
        self._cache.clear()

    def evaluate_keep(self, net, keep, importance: str | None = None) -> EvalResult:
        """Evaluate ``net`` pruned to ``keep``, remembering results by keep state.

        The working copy is pruned in place (or masked, when the cost model predicts that
        is cheaper, see ``path``), evaluated, and put back.
        """
        masks = net.masks(keep, importance)
        key = KeepCache.key(masks)
        if self._cache_net is None or self._cache_net() is not net:
            # the same keep state of another network (or a copy) scores differently
            self.clear_cache()
            self._cache_net = weakref.ref(net)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        net.model.to(self.device)  # before pruning, so that new tensors land there too
        physical, macs = self._physical(net, masks)
        context = net.pruned if physical else net.masked
        start = time.perf_counter()
        with context(masks) as model:
            result = self.evaluate(model)
        if physical:
            self.physical_evaluations += 1
            if self._path_model is not None:
                self._path_model.observe(time.perf_counter() - start, macs)
        self._cache.put(key, result)
        return result
