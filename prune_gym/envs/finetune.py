"""Short fine-tuning before evaluation, on a physically pruned copy.

Why a copy: the environment's working network is masked and restored in place thousands
of times, and its pristine weights are what every later state is cut from. Training it,
even briefly, would leak one episode's fine-tune into the next. Exporting a fresh pruned
model per evaluation keeps the working copy untouched and costs little next to training.

The fine-tune is the project's one recipe, :func:`prune_gym.finetune.distill`: knowledge
distillation from the unpruned model, so that an environment's numbers and an agent's
post-training (RL-Pruner's) are recovered alike.
"""

from __future__ import annotations

import torch

from prune_gym.evaluate import EvalResult, Evaluator, KeepCache
from prune_gym.finetune import distill, teacher_outputs
from prune_gym.network import PrunableNetwork


class FineTuner:
    """Fine-tunes the exported model of a keep state by distillation, then evaluates it.

    The teacher is the unpruned model as the user gave it. Batches are drawn with a
    generator seeded per call, so a keep state always yields the same result and results
    can be cached by keep state like plain evaluations; for the same reason the teacher's
    outputs on those batches are the same every call, and are computed once.

    Args:
        train: ``(x, y)`` training tensors (never the validation split).
        steps: SGD steps per evaluation (linear warm-up, then cosine decay).
        lr: peak learning rate (momentum 0.9, weight decay 5e-4).
        batch_size: samples per step.
        seed: seeds the batch draws.
        cache_size: keep states whose result is remembered.
    """

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], steps: int, lr: float,
                 batch_size: int, seed: int, cache_size: int = 256):
        self.train = train
        self.steps = steps
        self.lr = lr
        self.batch_size = batch_size
        self.seed = seed
        self._cache = KeepCache(cache_size)
        self._teacher: torch.Tensor | None = None

    def _teacher_for(self, net: PrunableNetwork) -> torch.Tensor:
        """The unpruned model's outputs on every batch a fine-tune draws (computed once)."""
        if self._teacher is None:
            self._teacher = teacher_outputs(net.original_copy(), self.train, steps=self.steps,
                                            batch_size=self.batch_size, seed=self.seed)
        return self._teacher

    def evaluate(self, net: PrunableNetwork, evaluator: Evaluator, keep,
                 importance: str | None) -> EvalResult:
        """Accuracy of ``keep`` after ``steps`` of fine-tuning (the working copy untouched)."""
        masks = net.masks(keep, importance)
        key = KeepCache.key(masks)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        model = net.export(masks)
        distill(model, self._teacher_for(net), self.train, steps=self.steps,
                batch_size=self.batch_size, lr=self.lr, seed=self.seed)
        result = evaluator.evaluate(model)
        self._cache.put(key, result)
        return result
