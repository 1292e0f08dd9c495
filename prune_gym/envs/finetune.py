"""Short fine-tuning before evaluation, on a physically pruned copy.

Why a copy: the environment's working network is masked and restored in place thousands
of times, and its pristine weights are what every later state is cut from. Training it,
even briefly, would leak one episode's fine-tune into the next. Exporting a fresh pruned
model per evaluation keeps the working copy untouched and costs little next to training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prune_gym.evaluate import EvalResult, Evaluator, KeepCache
from prune_gym.network import PrunableNetwork


class FineTuner:
    """Fine-tunes the exported model of a keep state with SGD, then evaluates it.

    Batches are drawn with a generator seeded per call, so a keep state always yields the
    same result and results can be cached by keep state like plain evaluations.

    Args:
        train: ``(x, y)`` training tensors (never the validation split).
        steps: SGD steps per evaluation.
        lr: learning rate (momentum 0.9).
        batch_size: samples per step.
        seed: seeds the batch draws.
        cache_size: keep states whose result is remembered.
    """

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], steps: int, lr: float,
                 batch_size: int, seed: int, cache_size: int = 256):
        self.x, self.y = train
        self.steps = steps
        self.lr = lr
        self.batch_size = min(batch_size, len(self.x))
        self.seed = seed
        self._cache = KeepCache(cache_size)

    def evaluate(self, net: PrunableNetwork, evaluator: Evaluator, keep,
                 importance: str | None) -> EvalResult:
        """Accuracy of ``keep`` after ``steps`` of fine-tuning (the working copy untouched)."""
        masks = net.masks(keep, importance)
        key = KeepCache.key(masks)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        model = net.export(masks)
        generator = torch.Generator().manual_seed(self.seed)
        optimizer = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9)
        model.train()
        with torch.enable_grad():
            for _ in range(self.steps):
                idx = torch.randint(len(self.x), (self.batch_size,), generator=generator)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(self.x[idx]), self.y[idx]).backward()
                optimizer.step()
        model.eval()
        result = evaluator.evaluate(model)
        self._cache.put(key, result)
        return result
