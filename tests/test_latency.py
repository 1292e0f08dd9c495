"""Latency measurement: what is timed, how, and what comes back (never how fast: that is the
benchmark's business, timing asserts would fail on a loaded machine)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prune_gym.errors import InvalidArgumentError
from prune_gym.latency import compare_latency, measure_latency

FAST = dict(warmup=1, repeats=3, min_time=0.001)


class _Recorder(nn.Module):
    """Logs, per forward: its tag, batch size, training flag and inference mode."""

    def __init__(self, tag: str, log: list):
        super().__init__()
        self.tag, self.log = tag, log
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        self.log.append((self.tag, len(x), self.training, self.bn.training,
                         torch.is_inference_mode_enabled()))
        return self.bn(self.fc(x))


def _sane(stats: dict, repeats: int) -> None:
    assert 0 < stats["q25_s"] <= stats["median_s"] <= stats["q75_s"]
    assert stats["iqr_s"] == pytest.approx(stats["q75_s"] - stats["q25_s"])
    assert stats["samples"] == repeats and stats["calls_per_sample"] >= 1


def test_measure_latency_of_the_digits_model(task):
    model = copy.deepcopy(task.model).train()
    bn_flags = [m.training for m in model.modules()]
    before = torch.get_num_threads()
    out = measure_latency(model, task.example_inputs, batch_sizes=(1, 64), threads=1, **FAST)
    assert sorted(out["batches"]) == [1, 64]
    for size, stats in out["batches"].items():
        _sane(stats, 3)
        assert stats["per_image_s"] == pytest.approx(stats["median_s"] / size)
    assert out["threads"] == 1 and out["eval_mode"] and out["inference_mode"]
    assert torch.get_num_threads() == before  # torch's own setting put back
    assert [m.training for m in model.modules()] == bn_flags  # caller's flags put back


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_traced_and_frozen_torchscript_models_are_measured(task):
    traced = torch.jit.trace(copy.deepcopy(task.model).eval(), task.example_inputs)
    frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(task.model).eval(),
                                              task.example_inputs))
    assert not hasattr(frozen, "training")  # nothing to switch to eval, nothing to restore
    traced.train()
    out = compare_latency(traced, frozen, task.example_inputs, batch_sizes=(2,), **FAST)
    _sane(out["batches"][2]["original"], 3)
    _sane(out["batches"][2]["pruned"], 3)
    assert traced.training


def test_inputs_are_the_example_repeated_in_eval_and_inference_mode():
    log: list = []
    model = _Recorder("m", log).train()
    out = measure_latency(model, torch.randn(1, 4), batch_sizes=(2, 5), threads=None, **FAST)
    assert out["threads"] == torch.get_num_threads()
    assert {n for _, n, *_ in log} == {2, 5}
    assert all(not training and not bn and inference for _, _, training, bn, inference in log)
    assert model.training and model.bn.training


def test_compare_latency_interleaves_the_two_models():
    log: list = []
    original, pruned = _Recorder("A", log), _Recorder("B", log)
    out = compare_latency(original, pruned, torch.randn(3, 4), batch_sizes=(1,), warmup=1,
                          repeats=4, min_time=0.0)
    timed = [tag for tag, *_ in log[2:]]  # after one warm-up call each
    # alternating order, so that neither model always goes first; each sample in steady
    # state: an untimed call, then the timed one
    assert timed == list("AABBBBAAAABBBBAA")
    row = out["batches"][1]
    _sane(row["original"], 4)
    _sane(row["pruned"], 4)
    assert row["ratio_q25"] <= row["ratio"] <= row["ratio_q75"]
    assert row["reduction"] == pytest.approx(1 - row["ratio"])
    assert row["ratio"] > 0


def test_compare_latency_of_an_exported_digits_model(task, net):
    pruned = net.export([max(1, g.size // 2) for g in net.groups])
    out = compare_latency(task.model, pruned, task.example_inputs, threads=1, **FAST)
    for size in (1, 64):
        row = out["batches"][size]
        assert row["ratio"] == pytest.approx(1 - row["reduction"]) and row["ratio"] > 0
        _sane(row["pruned"], 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_sizes=()), "batch_sizes must be a non-empty sequence"),
    (dict(batch_sizes=64), "batch_sizes must be a non-empty sequence"),
    (dict(batch_sizes=(1, 0)), "batch_sizes must be an integer >= 1"),
    (dict(batch_sizes=(8, 8)), "repeats a size"),
    (dict(threads=0), "threads must be an integer >= 1 or None"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(min_time=-0.1), "min_time must be a finite number >= 0"),
    (dict(example_inputs="x"), "example_inputs must be a tensor"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(example_inputs=torch.randn(1, 4))
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        measure_latency(nn.Linear(4, 2), **args)
    with pytest.raises(InvalidArgumentError, match=match):
        compare_latency(nn.Linear(4, 2), nn.Linear(4, 2), **args)
    with pytest.raises(InvalidArgumentError, match="pruned must be a torch.nn.Module"):
        compare_latency(nn.Linear(4, 2), "pruned.pt", torch.randn(1, 4))
