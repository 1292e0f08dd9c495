"""The shared distillation fine-tune: it recovers a pruned model, is reproducible, leaves the
teacher alone, computes the documented loss and names bad arguments."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from agents.baselines import uniform
from prune_gym import PrunableNetwork
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.finetune import batch_indices, distill, teacher_outputs, warmup_cosine
from prune_gym.tasks import make_task


@pytest.fixture(scope="module")
def setup():
    task = make_task("digits-cnn-v1")
    net = PrunableNetwork(task.model, task.example_inputs)
    keep = uniform(net, 0.4)
    return task, net, keep, Evaluator(task.val_data)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_distillation_raises_validation_accuracy_of_a_pruned_model(setup):
    task, net, keep, evaluator = setup
    student = net.export(keep)
    before = evaluator.evaluate(student).accuracy
    teacher = net.original_copy().train()  # a teacher left in train mode by its owner
    reference = copy.deepcopy(teacher)
    train = task.data.train.as_tuple()
    saved = [t.clone() for t in train]
    out = distill(student, teacher, train, steps=100, seed=0)
    after = evaluator.evaluate(student).accuracy
    assert out is student and not student.training
    assert before < 0.6 and after > 0.9 and after > before + 0.3
    assert _same(teacher, reference) and teacher.training  # untouched, mode put back
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(train, saved))


def test_deterministic_for_a_seed_and_seed_matters(setup):
    task, net, keep, _ = setup
    train = task.data.train.as_tuple()
    runs = [distill(net.export(keep), net.original_copy(), train, steps=20, seed=s)
            for s in (3, 3, 4)]
    assert _same(runs[0], runs[1])
    assert not _same(runs[0], runs[2])


def test_precomputed_teacher_outputs_train_the_same_student(setup):
    task, net, keep, _ = setup
    train = task.data.train.as_tuple()
    teacher = net.original_copy()
    logits = teacher_outputs(teacher, train, steps=15, batch_size=32, seed=1)
    assert logits.shape == (15, 32, 10)
    a = distill(net.export(keep), teacher, train, steps=15, batch_size=32, seed=1)
    b = distill(net.export(keep), logits, train, steps=15, batch_size=32, seed=1)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)


def test_ce_weight_one_is_plain_cross_entropy(setup):
    task, net, keep, _ = setup
    train = task.data.train.as_tuple()
    a = distill(net.export(keep), None, train, steps=10, seed=2)
    b = distill(net.export(keep), net.original_copy(), train, steps=10, seed=2, ce_weight=1.0)
    assert _same(a, b)


def test_first_step_loss_is_the_documented_formula(setup):
    task, net, keep, _ = setup
    x, y = task.data.train.as_tuple()
    student, teacher = net.export(keep), net.original_copy()
    idx = batch_indices(len(x), 1, 16, 5)[0]
    with torch.no_grad():
        s = copy.deepcopy(student).train()(x[idx])
        t = teacher.eval()(x[idx])
    T, w = 3.0, 0.6
    p_t, p_s = F.softmax(t / T, 1), F.softmax(s / T, 1)
    kl = float((p_t * (p_t.log() - p_s.log())).sum(1).mean())
    expected = (1 - w) * T * T * kl + w * float(F.cross_entropy(s, y[idx]))
    losses = []
    distill(student, teacher, (x, y), steps=1, batch_size=16, seed=5, temperature=T,
            ce_weight=w, progress=lambda step, total, loss: losses.append((step, total, loss)))
    assert losses[0][:2] == (1, 1)
    assert math.isclose(losses[0][2], expected, rel_tol=1e-5)


def test_warmup_then_cosine_factors():
    assert warmup_cosine(0, 10, 2) == 0.5
    assert warmup_cosine(1, 10, 2) == 1.0
    assert warmup_cosine(2, 10, 2) == 1.0  # cosine starts at its peak
    assert math.isclose(warmup_cosine(6, 10, 2), 0.5)  # half-way through the 8 decay steps
    assert math.isclose(warmup_cosine(9, 10, 2), 0.5 * (1 + math.cos(7 * math.pi / 8)))
    assert warmup_cosine(0, 10, 0) == 1.0


def test_batches_are_seeded_epochs_of_permutations():
    idx = batch_indices(10, 5, 4, seed=7)
    assert idx.shape == (5, 4)
    flat = idx.flatten()
    assert sorted(flat[:10].tolist()) == list(range(10))  # first epoch sees each sample once
    assert torch.equal(idx, batch_indices(10, 5, 4, seed=7))
    assert not torch.equal(idx, batch_indices(10, 5, 4, seed=8))
    assert batch_indices(3, 2, 64, seed=0).shape == (2, 3)  # batch clipped to the data


def test_zero_steps_leaves_weights_but_returns_eval_mode(setup):
    task, net, keep, _ = setup
    student = net.export(keep).train()
    before = copy.deepcopy(student)
    distill(student, None, task.data.train.as_tuple(), steps=0)
    assert _same(student, before) and not student.training


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"steps": -1}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"temperature": 0}, "temperature"),
    ({"ce_weight": 1.5}, "ce_weight"),
    ({"warmup_steps": 9}, "warmup_steps"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"seed": "zero"}, "seed"),
    ({"progress": "bar"}, "progress"),
])
def test_bad_arguments_are_named(setup, kwargs, name):
    task, net, keep, _ = setup
    args = {"steps": 5, **kwargs}
    with pytest.raises(InvalidArgumentError, match=rf"\b{name}\b"):
        distill(net.export(keep), None, task.data.train.as_tuple(), **args)


def test_bad_models_and_data_are_named(setup):
    task, net, keep, _ = setup
    train = task.data.train.as_tuple()
    student = net.export(keep)
    with pytest.raises(InvalidArgumentError, match="student"):
        distill("model", None, train, steps=1)
    with pytest.raises(InvalidArgumentError, match="teacher"):
        distill(student, student, train, steps=1)
    with pytest.raises(InvalidArgumentError, match="teacher"):
        distill(student, "teacher", train, steps=1)
    with pytest.raises(InvalidArgumentError, match="teacher"):
        distill(student, torch.zeros(3, 64, 10), train, steps=1)
    with pytest.raises(InvalidArgumentError, match="train"):
        distill(student, None, (train[0], train[1][:-1]), steps=1)
    with pytest.raises(InvalidArgumentError, match="teacher"):
        teacher_outputs("teacher", train, steps=1)
