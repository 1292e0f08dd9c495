"""One short fine-tune for every method: knowledge distillation from the unpruned model.

Why one: results of different agents only compare if the pruned networks they find are
recovered the same way. The environments' ``finetune_steps``, RL-Pruner's post-training
between pruning steps and any benchmark's final fine-tune all call :func:`distill`.

The recipe follows RL-Pruner's post-training (Beryex/RLPruner-CNN, ``compress.py``): the
loss is ``(1 - ce_weight) * T^2 * KL(softmax(t/T) || softmax(s/T)) + ce_weight * CE(s, y)``
with T = 2 and weights 0.25 / 0.75 (the defaults of ``fine_tuning_network_knowledge_
distillation`` at commit 9272085; the later ``--stu_co`` is the same CE weight), SGD with
momentum 0.9 and weight decay 5e-4, a linear warm-up then cosine decay. Its unit is the
epoch; ours is the optimiser step, so that a fine-tune costs the same on any data set.

Batches are a pure function of the seed (:func:`batch_indices`), so a fine-tune is
reproducible, and one repeated with the same seed (an environment fine-tunes every
evaluated state alike) can reuse the teacher's outputs: :func:`teacher_outputs` computes
them once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from prune_gym.arguments import check_callable, check_int, check_number
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import as_tensors

__all__ = ["batch_indices", "distill", "teacher_outputs", "warmup_cosine"]

Progress = Callable[[int, int, float], None]


def warmup_cosine(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate factor of 0-based ``step``: linear warm-up to 1 over ``warmup_steps``
    steps, then cosine decay towards 0 over the rest (never exactly 0 on a step taken)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = steps - warmup_steps
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup_steps) / rest)) if rest else 1.0


def batch_indices(num_samples: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Training-sample indices of each step's batch, shape ``(steps, min(batch_size, n))``.

    Epochs of a seeded permutation laid end to end: every sample is seen once per epoch,
    and the same seed always draws the same batches.
    """
    batch = min(batch_size, num_samples)
    generator = torch.Generator().manual_seed(seed)
    needed = steps * batch
    order = [torch.randperm(num_samples, generator=generator)
             for _ in range(-(-needed // num_samples))]
    flat = torch.cat(order) if order else torch.empty(0, dtype=torch.long)
    return flat[:needed].reshape(steps, batch)


def _check_common(train, steps, batch_size, seed) -> tuple:
    x, y = as_tensors(train, "train")
    steps = check_int(steps, "steps", meaning="optimiser steps")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed")
    return x, y, steps, batch_size, seed


def _device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, train, *, steps: int, batch_size: int = 64,
                    seed: int = 0) -> torch.Tensor:
    """The teacher's logits for every batch :func:`distill` draws with the same ``train``,
    ``steps``, ``batch_size`` and ``seed``: shape ``(steps, batch, classes)``.

    Pass the result as ``distill``'s ``teacher`` to skip the teacher's forwards when the
    same fine-tune recipe is run many times. The teacher is evaluated in eval mode and its
    mode is put back.
    """
    if not isinstance(teacher, nn.Module):
        raise InvalidArgumentError(f"teacher must be a torch.nn.Module; got "
                                   f"{type(teacher).__name__}")
    x, _, steps, batch_size, seed = _check_common(train, steps, batch_size, seed)
    device = _device(teacher)
    idx = batch_indices(len(x), steps, batch_size, seed)
    was_training = teacher.training
    teacher.eval()
    try:
        outs = [teacher(x[i].to(device)).float().cpu() for i in idx]
    finally:
        teacher.train(was_training)
    if not outs:
        return torch.empty(0, idx.shape[1], 0)
    return torch.stack(outs)


def distill(student: nn.Module, teacher: nn.Module | torch.Tensor | None, train, *,
            steps: int, batch_size: int = 64, lr: float = 0.01, momentum: float = 0.9,
            weight_decay: float = 5e-4, warmup_steps: int | None = None,
            temperature: float = 2.0, ce_weight: float = 0.75, seed: int = 0,
            progress: Progress | None = None) -> nn.Module:
    """Fine-tune ``student`` in place for ``steps`` SGD steps, distilling from ``teacher``.

    Args:
        student: the (pruned) model to train; trained in train mode, returned in eval mode.
        teacher: the unpruned model (used in eval mode, without gradients, its mode put
            back), its precomputed outputs from :func:`teacher_outputs`, or ``None`` for
            plain cross-entropy.
        train: ``(x, y)`` training tensors (never the validation split).
        steps: optimiser steps (0 returns the student untouched but in eval mode).
        batch_size: samples per step (at most the training set).
        lr: peak learning rate.
        momentum: SGD momentum, in [0, 1).
        weight_decay: L2 penalty, >= 0.
        warmup_steps: linear warm-up length (default: 10 % of ``steps``), then cosine decay.
        temperature: softening temperature T of both outputs (> 0).
        ce_weight: weight of the label cross-entropy, in [0, 1]; the distillation term gets
            ``1 - ce_weight``.
        seed: draws the batches (:func:`batch_indices`) and seeds any randomness of the
            student's forward (dropout) without touching the global generator.
        progress: optional ``progress(step, steps, loss)`` called after each step (1-based).

    Returns:
        ``student``, trained and in eval mode.
    """
    if not isinstance(student, nn.Module):
        raise InvalidArgumentError(f"student must be a torch.nn.Module; got "
                                   f"{type(student).__name__}")
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise InvalidArgumentError("student has no trainable parameters to fine-tune")
    if teacher is student:
        raise InvalidArgumentError("teacher must not be the student itself: pass the unpruned "
                                   "model (e.g. net.original_copy()) or None")
    if teacher is not None and not isinstance(teacher, (nn.Module, torch.Tensor)):
        raise InvalidArgumentError(f"teacher must be a torch.nn.Module, a tensor from "
                                   f"teacher_outputs() or None; got {type(teacher).__name__}")
    x, y, steps, batch_size, seed = _check_common(train, steps, batch_size, seed)
    lr = check_number(lr, "lr", low=0.0, meaning="the peak learning rate")
    momentum = check_number(momentum, "momentum", low=0.0, high=1.0, low_open=False,
                            high_open=True)
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0, low_open=False)
    temperature = check_number(temperature, "temperature", low=0.0,
                               meaning="the distillation temperature T")
    ce_weight = check_number(ce_weight, "ce_weight", low=0.0, high=1.0, low_open=False,
                             meaning="the weight of the label cross-entropy")
    warmup_steps = int(0.1 * steps) if warmup_steps is None else check_int(
        warmup_steps, "warmup_steps", meaning="linear warm-up steps")
    if warmup_steps > steps:
        raise InvalidArgumentError(f"warmup_steps={warmup_steps} is longer than steps={steps}; "
                                   f"use warmup_steps <= {steps}")
    check_callable(progress, "progress", "progress(step, total, loss)")
    idx = batch_indices(len(x), steps, batch_size, seed)
    if isinstance(teacher, torch.Tensor) and tuple(teacher.shape[:2]) != tuple(idx.shape):
        raise InvalidArgumentError(
            f"teacher outputs have shape {tuple(teacher.shape)} but this fine-tune draws "
            f"{tuple(idx.shape)} (steps, batch) samples; compute them with teacher_outputs() "
            "and the same train, steps, batch_size and seed")
    device = _device(student)
    teacher_mode = teacher.training if isinstance(teacher, nn.Module) else None
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    student.train()
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            if isinstance(teacher, nn.Module):
                teacher.eval()
            for step, batch in enumerate(idx):
                for group in optimizer.param_groups:
                    group["lr"] = lr * warmup_cosine(step, steps, warmup_steps)
                xb, yb = x[batch].to(device), y[batch].to(device)
                out = student(xb)
                loss = _loss(out, yb, teacher, step, xb, temperature, ce_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if progress is not None:
                    progress(step + 1, steps, float(loss.detach()))
    finally:
        if teacher_mode is not None:
            teacher.train(teacher_mode)
        student.zero_grad(set_to_none=True)
        student.eval()
    return student


def _loss(out: torch.Tensor, y: torch.Tensor, teacher, step: int, x: torch.Tensor,
          temperature: float, ce_weight: float) -> torch.Tensor:
    """``(1 - w) T^2 KL(teacher || student) + w CE`` on softened outputs (Hinton et al.)."""
    ce = F.cross_entropy(out, y)
    if teacher is None or ce_weight == 1.0:
        return ce
    if isinstance(teacher, torch.Tensor):
        target = teacher[step].to(out.device)
    else:
        with torch.no_grad():
            target = teacher(x)
    if target.shape != out.shape:
        raise InvalidArgumentError(f"teacher outputs shape {tuple(target.shape)} but the "
                                   f"student {tuple(out.shape)}; both must score the same "
                                   "classes")
    kl = F.kl_div(F.log_softmax(out / temperature, dim=1),
                  F.log_softmax(target.float() / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - ce_weight) * temperature ** 2 * kl + ce_weight * ce
