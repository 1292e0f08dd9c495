"""Evaluator: accuracy on held-out data, BN recalibration that leaves no trace, caching."""

from __future__ import annotations

import math

import numpy as np
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


def test_cache_is_per_network(model, data):
    """The same keep state of another network scores that network, not a remembered one."""
    x, y = data
    torch.manual_seed(1)
    other_model = digits_cnn().eval()  # the same architecture, other weights
    net, other = PrunableNetwork(model, x[:1]), PrunableNetwork(other_model, x[:1])
    evaluator = Evaluator((x, y))
    keep = [max(1, g.size // 2) for g in net.groups]
    mine = evaluator.evaluate_keep(net, keep)
    theirs = evaluator.evaluate_keep(other, keep)
    assert evaluator.evaluations == 2
    assert theirs == Evaluator((x, y)).evaluate_keep(other, keep) != mine
    # and after a weight change, clear_cache() makes the next call evaluate again
    evaluator.clear_cache()
    evaluator.evaluate_keep(other, keep)
    assert evaluator.evaluations == 3


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


# -- the physically pruned network: same results, less work ------------------------------
@pytest.fixture(scope="module", params=["digits-cnn-v1", "digits-resnet-v1"])
def real(request):
    """An embedded task's trained model, its analysed network and its splits."""
    from prune_gym.tasks import make_task

    task = make_task(request.param)
    net = PrunableNetwork(task.model, task.example_inputs)
    return task, net


def _keeps(net, n=4, seed=0):
    gen = np.random.default_rng(seed)
    keeps = [[int(gen.integers(1, g.size + 1)) for g in net.groups] for _ in range(n)]
    keeps.append([max(1, g.size // 4) for g in net.groups])
    keeps.append([[int(i) for i in gen.choice(g.size, max(1, g.size // 2), replace=False)]
                  for g in net.groups])
    return keeps


@pytest.mark.parametrize("recalibration", [0, 3])
def test_physical_evaluation_equals_masked_evaluation(real, recalibration):
    task, net = real
    kwargs = dict(train_data=task.data.train.as_tuple(), bn_recalibration=recalibration,
                  bn_batch_size=32, batch_size=100, cache_size=0)
    masked = Evaluator(task.val_data, path="masked", **kwargs)
    physical = Evaluator(task.val_data, path="physical", **kwargs)
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    for keep in _keeps(net):
        a, b = masked.evaluate_keep(net, keep), physical.evaluate_keep(net, keep)
        assert a.accuracy == b.accuracy, keep
        assert a.loss == pytest.approx(b.loss, rel=1e-5, abs=1e-6), keep
    assert masked.physical_evaluations == 0
    assert physical.physical_evaluations == physical.evaluations == len(_keeps(net))
    after = net.model.state_dict()  # working copy, BN statistics included, as it was
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # and both equal the exported model, recalibrated the same way, evaluated plainly
    keep = _keeps(net)[-2]
    exported = net.export(keep)
    physical.recalibrate(exported)
    plain = Evaluator(task.val_data, batch_size=100).evaluate(exported)
    assert plain.accuracy == physical.evaluate_keep(net, keep).accuracy


def test_auto_path_prunes_when_it_pays_and_agrees_with_masking(real):
    task, net = real
    auto = Evaluator(task.val_data, cache_size=0)
    masked = Evaluator(task.val_data, path="masked", cache_size=0)
    small = [max(1, g.size // 4) for g in net.groups]  # a quarter of the channels or less
    assert auto.evaluate_keep(net, small).accuracy == masked.evaluate_keep(net, small).accuracy
    assert auto.physical_evaluations == 1  # the first pruned state is run physically
    full = [g.size for g in net.groups]  # nothing pruned: nothing to gain
    assert auto.evaluate_keep(net, full) == masked.evaluate_keep(net, full)
    assert auto.physical_evaluations == 1 and auto.evaluations == 2
    import pickle  # vector envs pickle attributes: the timing model is dropped, re-measured

    clone = pickle.loads(pickle.dumps(auto))
    assert clone.evaluate_keep(net, small) == auto.evaluate_keep(net, small)


def test_recalibration_uses_its_own_batches_not_the_eval_batch_size(model, data):
    x, y = data
    shifted = (x * 3 + 1, y)
    kwargs = dict(train_data=shifted, bn_recalibration=2, bn_batch_size=50)
    small, large = Evaluator(shifted, batch_size=7, **kwargs), Evaluator(shifted, **kwargs)
    assert len(small.train_x) == len(large.train_x) == 100
    a, b = small.evaluate(model), large.evaluate(model)
    assert a.accuracy == b.accuracy and a.loss == pytest.approx(b.loss, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(bn_batch_size=0), "bn_batch_size"),
    (dict(path="fastest"), "path"),
    (dict(cache_size=-1), "cache_size"),
])
def test_bad_evaluation_settings(kwargs, match, data):
    with pytest.raises(InvalidArgumentError, match=match):
        Evaluator(data, **kwargs)


def test_numpy_integers_are_accepted_like_python_ones(data):
    """An environment hands np.int64 values on (eval_samples from a config array, say)."""
    x, y = data
    evaluator = Evaluator(data, max_samples=np.int64(30), batch_size=np.int32(7),
                          cache_size=np.int64(2), train_data=data,
                          bn_recalibration=np.int64(1), bn_batch_size=np.int16(10))
    assert len(evaluator.x) == 30 and evaluator.batch_size == 7
    assert len(evaluator.train_x) == 10 and type(evaluator.bn_recalibration) is int
