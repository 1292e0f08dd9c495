"""The embedded digits tasks: small networks on sklearn's digits, no download.

- ``digits-cnn-v1`` and ``digits-resnet-v1`` load trained weights shipped inside the
  package (:data:`SHIPPED_WEIGHTS`, a few hundred KB, read with ``weights_only=True`` after
  a sha256 check), so every install on every CPU gets the same network and every result
  recorded on them replays anywhere. ``train=True`` trains the network here instead, with
  the same recipe (and caches it): it is the code that made the shipped files, but its
  result depends on the CPU (floating-point reductions differ between machines).
- ``digits-cnn-v0`` and ``digits-resnet-v0``, the first release, train on first use and
  cache the result under ``<cache>/tasks/<name>/seed<N>.pt`` with a recipe string, so a
  changed recipe never reuses stale weights. Their network differs from CPU to CPU: results
  on them reproduce only on the machine that trained it.

The residual net has 12 prunable groups (residual streams included), enough to test graph
policies and transfer between networks without any download.
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
from prune_gym.errors import CheckpointError, TaskError
from prune_gym.models import digits_cnn, digits_resnet, load_checkpoint
from prune_gym.models.checkpoints import file_sha256, load_state_dict_file
from prune_gym.tasks.base import Task, accuracy, save_atomic

__all__ = [
    "DIGITS_RECIPE",
    "DIGITS_RESNET_RECIPE",
    "SHIPPED_WEIGHTS",
    "WEIGHTS_DIR",
    "train_digits",
    "train_digits_cnn",
    "train_digits_resnet",
]

# Bump when a digits training recipe changes, so stale cached weights are not reused.
DIGITS_RECIPE = "digits-cnn-v0/adamw-onecycle-15ep-bs64"
DIGITS_RESNET_EPOCHS = 8
DIGITS_RESNET_RECIPE = f"digits-resnet-v0/adamw-onecycle-{DIGITS_RESNET_EPOCHS}ep-bs64"

# The weights the -v1 tasks ship, per task and data seed: file name and sha256. They were
# trained once by :func:`write_shipped` with the recipes above (2-core AMD EPYC VM, torch
# 2.13.0 CPU, 2026-12-08); a new file is a new task version.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED_WEIGHTS: dict[str, dict[int, tuple[str, str]]] = {
    "digits-cnn-v1": {0: ("digits-cnn-v1-seed0.pt", "43ded56ac3fcf2f2a55ada597635f206dd1aef1cb9"
                          "63f384c26fbe2400a766f3")},
    "digits-resnet-v1": {0: ("digits-resnet-v1-seed0.pt", "2315cebb556352a5dc809e2fee8926db7e"
                             "648f8055ee929d36b5b0b5cbce9858")},
}


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


def _load_shipped(
    name: str, seed: int, data: DataSplits, builder: Callable[..., nn.Module], recipe: str,
) -> tuple[nn.Module, dict]:
    """The packaged weights of ``name`` for data seed ``seed``, checked by sha256."""
    shipped = SHIPPED_WEIGHTS.get(name, {})
    if seed not in shipped:
        raise TaskError(
            f"seed={seed!r}: {name} ships trained weights for seed(s) {sorted(shipped)} only; "
            "pass train=True to train a network for this seed on this machine (cached; its "
            "weights, and so its results, depend on the CPU)")
    filename, sha256 = shipped[seed]
    path = WEIGHTS_DIR / filename
    if not path.is_file():
        raise CheckpointError(f"{name}: the shipped weights {str(path)!r} are missing from the "
                              "installed package; reinstall prune-gym")
    actual = file_sha256(path)
    if actual != sha256:
        raise CheckpointError(f"{name}: the shipped weights {str(path)!r} have sha256 {actual}, "
                              f"not {sha256}; the installed package is damaged or was edited: "
                              "reinstall prune-gym")
    blob = load_state_dict_file(path)
    if blob.get("recipe") != recipe:
        raise CheckpointError(f"{name}: {str(path)!r} was trained with recipe "
                              f"{blob.get('recipe')!r}, not {recipe!r}")
    model = load_checkpoint(builder(num_classes=data.num_classes), blob).eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return model, {**info, "weights": str(path), "weights_sha256": actual, "shipped": True}


def _train_or_cached(
    name: str, seed: int, data: DataSplits, builder: Callable[..., nn.Module], recipe: str,
    trainer: Callable[[DataSplits, int], nn.Module], cache_dir: str | os.PathLike | None,
    retrain: bool,
) -> tuple[nn.Module, dict, Path]:
    """Train with the recipe (or load this machine's cached result of doing so)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "tasks" / name / f"seed{seed}.pt"
    cached = None if retrain else _load_cached_digits(path, data, builder, recipe)
    if cached is not None:
        model, info = cached
        return model, {**info, "from_cache": True}, path
    start = time.perf_counter()
    model = trainer(data, seed)
    info = {
        "recipe": recipe,
        "seed": seed,
        "val_accuracy": accuracy(model, *data.val.as_tuple()),
        "test_accuracy": accuracy(model, *data.test.as_tuple()),
        "train_seconds": time.perf_counter() - start,
    }
    save_atomic({"state_dict": model.state_dict(), **info}, path)
    return model, {**info, "from_cache": False}, path


def _digits_task(
    name: str, builder: Callable[..., nn.Module], recipe: str,
    trainer: Callable[[DataSplits, int], nn.Module], description: str, *, shipped: bool,
) -> Callable[..., Task]:
    """A factory for an embedded digits task.

    ``shipped`` tasks load the packaged weights unless ``train=True``; the others (the v0
    tasks) always train on first use and cache the result.
    """

    def _task(model: nn.Module, data: DataSplits, budget: float, info: dict) -> Task:
        return Task(name=name, model=model, data=data, example_inputs=data.val.x[:1].clone(),
                    budget=budget, num_classes=data.num_classes, description=description,
                    metadata=info)

    if not shipped:
        def factory(
            *, seed: int = 0, budget: float = 0.5, cache_dir: str | os.PathLike | None = None,
            retrain: bool = False,
        ) -> Task:
            """Train (or load cached) weights for ``seed``; ``retrain`` ignores the cache."""
            budget = check_budget(budget)
            data = load_digits(seed=seed)
            model, info, path = _train_or_cached(name, seed, data, builder, recipe, trainer,
                                                 cache_dir, retrain)
            return _task(model, data, budget, {**info, "weights": str(path)})
    else:
        def factory(
            *, seed: int = 0, budget: float = 0.5, train: bool = False,
            cache_dir: str | os.PathLike | None = None, retrain: bool = False,
        ) -> Task:
            """The shipped network for ``seed``; ``train=True`` trains it here instead.

            ``train=True`` runs the recipe that made the shipped weights (cached under
            ``cache_dir``; ``retrain=True`` ignores that cache). Its network depends on the
            CPU, so results on it compare only with results from the same machine.
            """
            budget = check_budget(budget)
            for arg, value in (("train", train), ("retrain", retrain)):
                if not isinstance(value, bool):
                    raise TaskError(f"{arg}={value!r} must be True or False")
            if retrain and not train:
                raise TaskError(f"retrain=True retrains a network trained here; {name} loads "
                                "its shipped weights unless train=True: pass both")
            data = load_digits(seed=seed)
            if train:
                model, info, path = _train_or_cached(name, seed, data, builder, recipe,
                                                     trainer, cache_dir, retrain)
                return _task(model, data, budget, {**info, "weights": str(path),
                                                   "shipped": False})
            model, info = _load_shipped(name, seed, data, builder, recipe)
            return _task(model, data, budget, info)

    factory.__name__ = "_" + name.replace("-", "_")
    return factory


_CNN_TEXT = "Small CNN on sklearn's 8x8 digits"
_RESNET_TEXT = ("Small residual net (3 stages x 3 BasicBlocks, 1x1 projection shortcuts, 12 "
                "prunable groups) on sklearn's 8x8 digits")
# The trainers are looked up at call time (not bound here), so that tests can replace them.
digits_cnn_v0 = _digits_task(
    "digits-cnn-v0", digits_cnn, DIGITS_RECIPE,
    lambda data, seed: train_digits_cnn(data, seed=seed),
    f"{_CNN_TEXT}; trained on first use, so its weights depend on the CPU (use -v1).",
    shipped=False,
)
digits_resnet_v0 = _digits_task(
    "digits-resnet-v0", digits_resnet, DIGITS_RESNET_RECIPE,
    lambda data, seed: train_digits_resnet(data, seed=seed),
    f"{_RESNET_TEXT}; trained on first use, so its weights depend on the CPU (use -v1).",
    shipped=False,
)
digits_cnn_v1 = _digits_task(
    "digits-cnn-v1", digits_cnn, DIGITS_RECIPE,
    lambda data, seed: train_digits_cnn(data, seed=seed),
    f"{_CNN_TEXT}; shipped weights, the same network on every machine.", shipped=True,
)
digits_resnet_v1 = _digits_task(
    "digits-resnet-v1", digits_resnet, DIGITS_RESNET_RECIPE,
    lambda data, seed: train_digits_resnet(data, seed=seed),
    f"{_RESNET_TEXT}; shipped weights, the same network on every machine.", shipped=True,
)


def write_shipped(seed: int = 0) -> dict[str, tuple[str, str]]:
    """Train the -v1 networks for ``seed`` with their recipes and write the shipped files.

    Maintainers only: the files it writes replace the package's, so every result on the -v1
    tasks would change (then bump the versions). Returns the entries of
    :data:`SHIPPED_WEIGHTS`: ``python -c "from prune_gym.tasks.digits import write_shipped;
    print(write_shipped())"``.
    """
    out = {}
    for name, recipe, train in (
        ("digits-cnn-v1", DIGITS_RECIPE, train_digits_cnn),
        ("digits-resnet-v1", DIGITS_RESNET_RECIPE, train_digits_resnet),
    ):
        data = load_digits(seed=seed)
        start = time.perf_counter()
        model = train(data, seed=seed)
        blob = {"state_dict": model.state_dict(), "recipe": recipe, "seed": seed,
                "val_accuracy": accuracy(model, *data.val.as_tuple()),
                "test_accuracy": accuracy(model, *data.test.as_tuple()),
                "train_seconds": time.perf_counter() - start}
        filename = f"{name}-seed{seed}.pt"
        save_atomic(blob, WEIGHTS_DIR / filename)
        (WEIGHTS_DIR / filename).chmod(0o644)
        out[name] = (filename, file_sha256(WEIGHTS_DIR / filename))
    return out

