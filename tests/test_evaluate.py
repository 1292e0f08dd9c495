"""Evaluator: accuracy on held-out data, BN recalibration that leaves no trace, caching."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prune_gym import PrunableNetwork
from prune_gym.errors import DataError, InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.models import digits_cnn


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)
    return x, y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return digits_cnn().eval()


def _manual_accuracy(model, x, y):
    with torch.no_grad():
        out = model(x)
    return float((out.argmax(1) == y).float().mean()), float(nn.functional.cross_entropy(out, y))


def test_accuracy_and_loss_match_a_manual_computation(model, data):
    x, y = data
    result = Evaluator((x, y), batch_size=64).evaluate(model)
    accuracy, loss = _manual_accuracy(model, x, y)
    assert result.accuracy == pytest.approx(accuracy)
    assert result.loss == pytest.approx(loss, rel=1e-5)


def test_dataloader_and_subset(model, data):
    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    subset = Evaluator(loader, max_samples=100).evaluate(model)
    assert subset.accuracy == pytest.approx(_manual_accuracy(model, x[:100], y[:100])[0])


def test_bn_recalibration_changes_result_but_not_the_model(model, data):
    x, y = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shifted = (x * 3 + 1, y)  # a distribution shift the stored statistics do not match
    plain = Evaluator(shifted).evaluate(model)
    recal = Evaluator(shifted, train_data=shifted, bn_recalibration=2, batch_size=100)
    result = recal.evaluate(model)
    assert result.loss != pytest.approx(plain.loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_num_threads_applies_during_evaluation_only(model, data):
    before = torch.get_num_threads()
    seen = []
    Evaluator(fn=lambda m: seen.append(torch.get_num_threads()) or 1.0,
              num_threads=1).evaluate(model)
    assert seen == [1] and torch.get_num_threads() == before


def test_user_callable_replaces_accuracy(model, data):
    seen = []
    result = Evaluator(fn=lambda m: seen.append(m) or 0.25).evaluate(model)
    assert result.accuracy == 0.25 and math.isnan(result.loss) and seen == [model]


def test_keep_state_cache_and_masked_equals_exported(model, data):
    x, y = data
    net = PrunableNetwork(model, x[:1])
    evaluator = Evaluator((x, y))
    keep = [max(1, g.size // 2) for g in net.groups]
    first = evaluator.evaluate_keep(net, keep)
    assert evaluator.evaluations == 1
    assert evaluator.evaluate_keep(net, keep) == first
    assert evaluator.evaluate_keep(net, net.resolve(keep)) == first  # same state, as indices
    assert evaluator.evaluations == 1
    evaluator.evaluate_keep(net, [g.size for g in net.groups])
    assert evaluator.evaluations == 2
    assert evaluator.evaluate(net.export(keep)).accuracy == pytest.approx(first.accuracy)


def test_check_model_catches_data_that_does_not_fit(model, data):
    x, y = data
    Evaluator((x, y)).check_model(model)
    with pytest.raises(DataError, match="labels"):
        Evaluator((x, y + 10)).check_model(model)
    with pytest.raises(DataError, match="do not fit"):
        Evaluator((torch.randn(4, 3, 32, 32), y[:4])).check_model(model)
    with torch.no_grad():
        broken = digits_cnn().eval()
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(DataError, match="not finite"):
        Evaluator((x, y)).check_model(broken)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(val_data=(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long))), DataError,
     "empty"),
    (dict(val_data=(torch.randn(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))), DataError,
     "labels"),
    (dict(val_data=(torch.randn(4, 1, 8, 8), torch.zeros(4))), DataError, "integer"),
    (dict(val_data=None), DataError, "val_data"),
    (dict(val_data="nonsense"), DataError, "val_data"),
    (dict(batch_size=0), InvalidArgumentError, "batch_size"),
    (dict(max_samples=0), InvalidArgumentError, "max_samples"),
    (dict(num_threads=0), InvalidArgumentError, "num_threads"),
    (dict(bn_recalibration=2), InvalidArgumentError, "train_data"),
    (dict(bn_recalibration=-1), InvalidArgumentError, "bn_recalibration"),
    (dict(fn="not callable"), InvalidArgumentError, "callable"),
])
def test_bad_arguments(kwargs, error, match, data):
    kwargs.setdefault("val_data", data)
    val = kwargs.pop("val_data")
    with pytest.raises(error, match=match):
        Evaluator(val, **kwargs)
