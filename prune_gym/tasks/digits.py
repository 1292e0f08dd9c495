"""The embedded digits tasks: networks trained in seconds on sklearn's digits, then cached.

``digits-cnn-v0`` and ``digits-resnet-v0`` need nothing but scikit-learn: their networks
train on first use with one shared recipe (:func:`train_digits`) and are cached
atomically under ``<cache>/tasks/<name>/seed<N>.pt`` together with a recipe string, so a
changed recipe never reuses stale weights. The residual one has 12 prunable groups
(residual streams included), enough to test graph policies and transfer between networks
without any download.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prune_gym.cost import check_budget
from prune_gym.data import DataSplits, default_cache_dir, load_digits
from prune_gym.models import digits_cnn, digits_resnet, load_checkpoint
from prune_gym.tasks.base import Task, accuracy, save_atomic

__all__ = [
    "DIGITS_RECIPE",
    "DIGITS_RESNET_RECIPE",
    "train_digits",
    "train_digits_cnn",
    "train_digits_resnet",
]

# Bump when a digits training recipe changes, so stale cached weights are not reused.
DIGITS_RECIPE = "digits-cnn-v0/adamw-onecycle-15ep-bs64"
DIGITS_RESNET_EPOCHS = 8
DIGITS_RESNET_RECIPE = f"digits-resnet-v0/adamw-onecycle-{DIGITS_RESNET_EPOCHS}ep-bs64"


def train_digits(
    builder: Callable[..., nn.Module], data: DataSplits, seed: int = 0, epochs: int = 15,
    lr: float = 1e-2,
) -> nn.Module:
    """Train ``builder(num_classes=, in_channels=)`` on ``data.train`` (seeded, one CPU thread).

    The one training recipe of the embedded digits tasks (AdamW, one-cycle learning rate,
    batches of 64), so every embedded network is trained the same way and a recipe string
    names it exactly. Runs single-threaded: for models this small, thread hand-offs cost
    more than they save, and it keeps results closer to reproducible across machines.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():  # do not disturb the caller's global RNG
            torch.manual_seed(seed)
            model = builder(num_classes=data.num_classes, in_channels=data.input_shape[0])
        gen = torch.Generator().manual_seed(seed)
        x, y = data.train.x, data.train.y
        batch = 64
        steps = epochs * -(-len(y) // batch)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), batch):
                idx = order[i:i + batch]
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def train_digits_cnn(data: DataSplits, seed: int = 0, epochs: int = 15) -> nn.Module:
    """Train the ``digits-cnn-v0`` CNN on ``data.train`` (seeded; a few seconds on one core)."""
    return train_digits(digits_cnn, data, seed=seed, epochs=epochs)


def train_digits_resnet(data: DataSplits, seed: int = 0, epochs: int = DIGITS_RESNET_EPOCHS
                        ) -> nn.Module:
    """Train the ``digits-resnet-v0`` residual net on ``data.train`` (seeded; seconds)."""
    return train_digits(digits_resnet, data, seed=seed, epochs=epochs)


def _load_cached_digits(
    path: Path, data: DataSplits, builder: Callable[..., nn.Module], recipe: str,
) -> tuple[nn.Module, dict] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("recipe") != recipe:
            return None
        model = load_checkpoint(builder(num_classes=data.num_classes), blob)
    except Exception as exc:  # a damaged cache is rebuilt, not fatal
        warnings.warn(f"ignoring unreadable cached weights {str(path)!r} ({exc}); retraining",
                      stacklevel=4)
        return None
    return model.eval(), {k: v for k, v in blob.items() if k != "state_dict"}


def _digits_task(
    name: str, builder: Callable[..., nn.Module], recipe: str,
    train: Callable[[DataSplits, int], nn.Module], description: str,
) -> Callable[..., Task]:
    """A factory for an embedded digits task: train on first use, then load the cache."""

    def factory(
        *, seed: int = 0, budget: float = 0.5, cache_dir: str | os.PathLike | None = None,
        retrain: bool = False,
    ) -> Task:
        """Train (or load cached) weights for ``seed``; ``retrain`` ignores the cache."""
        budget = check_budget(budget)
        data = load_digits(seed=seed)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = root / "tasks" / name / f"seed{seed}.pt"
        cached = None if retrain else _load_cached_digits(path, data, builder, recipe)
        if cached is None:
            start = time.perf_counter()
            model = train(data, seed)
            info = {
                "recipe": recipe,
                "seed": seed,
                "val_accuracy": accuracy(model, *data.val.as_tuple()),
                "test_accuracy": accuracy(model, *data.test.as_tuple()),
                "train_seconds": time.perf_counter() - start,
            }
            save_atomic({"state_dict": model.state_dict(), **info}, path)
            info["from_cache"] = False
        else:
            model, info = cached
            info["from_cache"] = True
        info["weights"] = str(path)
        return Task(
            name=name,
            model=model,
            data=data,
            example_inputs=data.val.x[:1].clone(),
            budget=budget,
            num_classes=data.num_classes,
            description=description,
            metadata=info,
        )

    factory.__name__ = "_" + name.replace("-", "_")
    return factory


# The trainers are looked up at call time (not bound here), so that tests can replace them.
digits_cnn_v0 = _digits_task(
    "digits-cnn-v0", digits_cnn, DIGITS_RECIPE,
    lambda data, seed: train_digits_cnn(data, seed=seed),
    "Small CNN on sklearn's 8x8 digits; embedded, trains in seconds, no download.",
)
digits_resnet_v0 = _digits_task(
    "digits-resnet-v0", digits_resnet, DIGITS_RESNET_RECIPE,
    lambda data, seed: train_digits_resnet(data, seed=seed),
    "Small residual net (3 stages x 3 BasicBlocks, 1x1 projection shortcuts, 12 prunable "
    "groups) on sklearn's 8x8 digits; embedded, trains in seconds, no download.",
)
