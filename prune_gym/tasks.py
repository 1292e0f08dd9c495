"""Named, versioned pruning tasks: a trained model, its data and a default budget.

A task name is a promise: ``digits-cnn-v0`` always means the same architecture, training
recipe, data split and budget, so results from different machines and agents compare.
Anything that changes those bumps the version suffix.

``digits-cnn-v0`` and ``digits-resnet-v0`` need nothing but scikit-learn: their networks
train in seconds on first use (one shared recipe, :func:`train_digits`) and are cached.
The residual one has 12 prunable groups (residual streams included), enough to test
graph policies and transfer between networks without any download.

The CIFAR-10 tasks use public reference checkpoints and the CIFAR-10 JPEG archive from
local paths (arguments or ``$PRUNE_GYM_DATA``); nothing is downloaded behind the user's
back.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_gym.cost import check_budget
from prune_gym.data import DataSplits, default_cache_dir, load_cifar10_jpeg, load_digits
from prune_gym.errors import InvalidArgumentError, TaskError
from prune_gym.models import (
    KNOWN_CHECKPOINTS,
    digits_cnn,
    digits_resnet,
    file_sha256,
    load_checkpoint,
    resnet20,
    resnet56,
)

__all__ = [
    "Task",
    "list_tasks",
    "make_task",
    "register_task",
    "train_digits",
    "train_digits_cnn",
    "train_digits_resnet",
]

DATA_ENV = "PRUNE_GYM_DATA"
CIFAR10_ARCHIVE = "cifar10-jpg.tar.gz"
# Bump when the digits training recipe changes, so stale cached weights are not reused.
DIGITS_RECIPE = "digits-cnn-v0/adamw-onecycle-15ep-bs64"
DIGITS_RESNET_EPOCHS = 8
DIGITS_RESNET_RECIPE = f"digits-resnet-v0/adamw-onecycle-{DIGITS_RESNET_EPOCHS}ep-bs64"


@dataclass
class Task:
    """Everything an environment needs: a trained model, data and a budget.

    Attributes:
        name: Versioned task name, e.g. ``"digits-cnn-v0"``.
        model: The trained model, in eval mode (a template: environments copy it).
        data: Train / validation (held out of train) / test splits.
        example_inputs: One input of batch size 1, for tracing the model.
        budget: Default fraction of the original MACs to keep.
        num_classes: Number of classes.
        description: One line on what the task is.
        constraint: Metric the budget applies to (``"macs"``).
        metadata: Provenance: weight and data paths, accuracies, cache files.
    """

    name: str
    model: nn.Module
    data: DataSplits
    example_inputs: torch.Tensor
    budget: float
    num_classes: int
    description: str
    constraint: str = "macs"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def val_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the validation split, as environments take it."""
        return self.data.val.as_tuple()

    @property
    def version(self) -> int:
        """The N of the ``-vN`` suffix."""
        return int(self.name.rsplit("-v", 1)[1])


@dataclass(frozen=True)
class _Spec:
    factory: Callable[..., Task]
    description: str


_TASKS: dict[str, _Spec] = {}


def register_task(name: str, factory: Callable[..., Task], description: str) -> None:
    """Add a task; ``factory(**overrides)`` must return a :class:`Task` named ``name``."""
    head, sep, version = name.rpartition("-v")
    if not head or not sep or not version.isdigit():
        raise InvalidArgumentError(f"name={name!r} must end in a version suffix like '-v0'")
    if name in _TASKS:
        raise InvalidArgumentError(f"name={name!r} is already registered; bump its version")
    _TASKS[name] = _Spec(factory, description)


def list_tasks() -> list[str]:
    """Names accepted by :func:`make_task`."""
    return sorted(_TASKS)


def make_task(name: str, **overrides: Any) -> Task:
    """Build a task by name.

    Args:
        name: One of :func:`list_tasks`.
        **overrides: Task options, e.g. ``budget=0.3``, ``seed=1``, ``cache_dir=...``,
            or for the CIFAR tasks ``data_dir=``, ``weights=``, ``archive=``, ``max_train=``.

    Raises:
        TaskError: Unknown name or option, or what the task needs is missing.
    """
    if name not in _TASKS:
        raise TaskError(
            f"name={name!r} is not a known task; known tasks: {', '.join(list_tasks())}"
        )
    factory = _TASKS[name].factory
    accepted = [p for p in inspect.signature(factory).parameters if p != "name"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TaskError(f"make_task({name!r}) got unknown option(s) {unknown}; "
                        f"accepted options: {accepted}")
    return factory(**overrides)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


# ----------------------------------------------------------------------------- digits


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


def _save_atomic(blob: dict, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written cache file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".part", dir=path.parent)
        os.close(fd)
    except OSError as exc:  # read-only home etc.: the task still works, just uncached
        warnings.warn(f"could not cache trained weights in {str(path.parent)!r} ({exc}); "
                      "set PRUNE_GYM_CACHE or pass cache_dir= to a writable folder",
                      stacklevel=4)
        return
    try:
        torch.save(blob, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
                "val_accuracy": _accuracy(model, *data.val.as_tuple()),
                "test_accuracy": _accuracy(model, *data.test.as_tuple()),
                "train_seconds": time.perf_counter() - start,
            }
            _save_atomic({"state_dict": model.state_dict(), **info}, path)
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
_digits_cnn_v0 = _digits_task(
    "digits-cnn-v0", digits_cnn, DIGITS_RECIPE,
    lambda data, seed: train_digits_cnn(data, seed=seed),
    "Small CNN on sklearn's 8x8 digits; embedded, trains in seconds, no download.",
)
_digits_resnet_v0 = _digits_task(
    "digits-resnet-v0", digits_resnet, DIGITS_RESNET_RECIPE,
    lambda data, seed: train_digits_resnet(data, seed=seed),
    "Small residual net (3 stages x 3 BasicBlocks, 1x1 projection shortcuts, 12 prunable "
    "groups) on sklearn's 8x8 digits; embedded, trains in seconds, no download.",
)


# ------------------------------------------------------------------------------ CIFAR-10


def _resolve(
    explicit: str | os.PathLike | None, data_dir: Path | None, filename: str, arg: str,
    hint: str,
) -> tuple[Path | None, str | None]:
    """A file path from an argument or from the data folder, or the reason it is missing."""
    if explicit is not None:
        path = Path(explicit)
        return (path, None) if path.is_file() else (None, f"{arg}={str(path)!r} does not exist")
    if data_dir is None:
        return None, (f"{arg}: not given and ${DATA_ENV} is not set; pass {arg}='.../{filename}'"
                      f" or set {DATA_ENV} to a folder holding {filename}{hint}")
    path = data_dir / filename
    if not path.is_file():
        return None, (f"{arg}: {filename} is not in data folder {str(data_dir)!r}; put it there "
                      f"or pass {arg}='.../{filename}'{hint}")
    return path, None


def _cifar10_resnet(name: str, depth: int) -> Callable[..., Task]:
    builder = {20: resnet20, 56: resnet56}[depth]
    key = f"resnet{depth}-cifar10-akamaster"
    known = KNOWN_CHECKPOINTS[key]

    def factory(
        *, data_dir: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
        archive: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
        val_size: int = 1000, seed: int = 0, max_train: int | None = None,
        max_val: int | None = None, max_test: int | None = None, budget: float = 0.5,
    ) -> Task:
        """Reference ResNet on CIFAR-10 JPEG.

        ``data_dir`` (or ``$PRUNE_GYM_DATA``) holds the weights and ``cifar10-jpg.tar.gz``;
        ``weights=``/``archive=`` point at them directly. The JPEG archive is decoded once
        into ``cache_dir``. The full training split is ~600 MB as float32: pass
        ``max_train`` if only a subset is needed.
        """
        budget = check_budget(budget)
        folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
        folder = Path(folder) if folder is not None else None
        if folder is not None and not folder.is_dir():
            raise TaskError(f"data folder {str(folder)!r} (from "
                            f"{'data_dir' if data_dir is not None else '$' + DATA_ENV}) "
                            "does not exist")
        w_hint = (f" (it can be fetched with prune_gym.models.download_checkpoint("
                  f"KNOWN_CHECKPOINTS[{key!r}]['url'], dest, KNOWN_CHECKPOINTS[{key!r}]"
                  "['sha256']))")
        w_path, w_err = _resolve(weights, folder, known["filename"], "weights", w_hint)
        a_path, a_err = _resolve(archive, folder, CIFAR10_ARCHIVE, "archive",
                                 " (CIFAR-10 as JPEG image folders: "
                                 "cifar10-jpg/{train,test}/<class>/*.jpg)")
        missing = [e for e in (w_err, a_err) if e]
        if missing:
            raise TaskError(f"task {name!r} cannot be built: " + "; ".join(missing))
        model = load_checkpoint(builder(num_classes=10), w_path).eval()
        sha = file_sha256(w_path)
        data = load_cifar10_jpeg(a_path, cache_dir, val_size=val_size, seed=seed,
                                 max_train=max_train, max_val=max_val, max_test=max_test)
        return Task(
            name=name,
            model=model,
            data=data,
            example_inputs=data.val.x[:1].clone(),
            budget=budget,
            num_classes=10,
            description=(f"ResNet-{depth} (akamaster reference weights) on CIFAR-10 JPEG; "
                         f"validation = {len(data.val)} images held out of train."),
            metadata={"weights": str(w_path), "archive": str(a_path), "seed": seed,
                      "weights_sha256": sha,
                      "reference_weights": sha == known["sha256"]},
        )

    factory.__name__ = f"_cifar10_resnet{depth}_v0"
    return factory


register_task("digits-cnn-v0", _digits_cnn_v0,
              "Small CNN on sklearn digits (embedded, trains in seconds).")
register_task("digits-resnet-v0", _digits_resnet_v0,
              "Small residual net on sklearn digits, 12 prunable groups (embedded, seconds).")
register_task("cifar10-resnet20-v0", _cifar10_resnet("cifar10-resnet20-v0", 20),
              "ResNet-20 on CIFAR-10 (local weights and JPEG archive).")
register_task("cifar10-resnet56-v0", _cifar10_resnet("cifar10-resnet56-v0", 56),
              "ResNet-56 on CIFAR-10 (local weights and JPEG archive).")
