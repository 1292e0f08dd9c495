"""Every bad input to the environments raises a PruneGymError subclass naming the argument."""

from __future__ import annotations

import copy
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import prune_gym  # noqa: F401 - registers the environments
from prune_gym import ENV_IDS
from prune_gym.errors import (
    DataError,
    EnvStateError,
    InvalidArgumentError,
    PruneGymError,
    TaskError,
)
from prune_gym.tasks import list_tasks


@pytest.fixture(scope="module")
def envs(task, net):
    """One reset environment per id (errors must not disturb them)."""
    return {i: gym.make(i, model=net, val_data=task.val_data) for i in ENV_IDS}


def raises(error: type[PruneGymError], *words: str):
    """pytest.raises for ``error`` whose message contains every word (case-insensitive)."""
    pattern = "".join(f"(?=.*{re.escape(w)})" for w in words)
    return pytest.raises(error, match=re.compile(pattern, re.IGNORECASE | re.DOTALL))


def assert_not_advanced(env: gym.Env) -> None:
    """Nothing half-done: after refused actions the network is whole and the next valid
    action is still step 1."""
    assert env.unwrapped.keep == [g.size for g in env.unwrapped.net.groups]
    *_, info = env.step(env.action_space.sample())
    assert info["step"] == 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_step_before_reset_and_after_the_end(task, net, env_id) -> None:
    env = gym.make(env_id, model=net, val_data=task.val_data)
    with raises(EnvStateError, "before reset"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    done = False
    while not done:
        *_, term, trunc, _ = env.step(env.action_space.sample())
        done = term or trunc
    with raises(EnvStateError, "episode ended", "reset"):
        env.step(env.action_space.sample())
    env.reset()
    env.step(env.action_space.sample())  # usable again after reset


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_wrong_action_shape_dtype_and_non_finite(envs, env_id) -> None:
    env = envs[env_id]
    env.reset()
    shape = env.action_space.shape
    with raises(InvalidArgumentError, "action", "shape"):
        env.step(np.zeros((shape[0] + 1,), dtype=np.float32))
    with raises(InvalidArgumentError, "action", "shape"):
        env.step(np.zeros((1, *shape), dtype=np.float32))
    with raises(InvalidArgumentError, "action", "dtype"):
        env.step(np.array(["a"] * shape[0]))
    with raises(InvalidArgumentError, "action", "dtype"):
        env.step(np.zeros(shape, dtype=np.complex64))
    if env_id != "ChannelMask-v0":
        for bad in (np.nan, np.inf, -np.inf):
            action = np.zeros(shape, dtype=np.float32)
            action[0] = bad
            with raises(InvalidArgumentError, "action", "nan or inf"):
                env.step(action)
    assert_not_advanced(env)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_actions_outside_the_space(envs, env_id) -> None:
    env = envs[env_id]
    env.reset()
    shape = env.action_space.shape
    if env_id == "ChannelMask-v0":
        bad = [np.full(shape, 2), np.full(shape, -1), np.full(shape, 0.5)]
    else:
        bad = [np.full(shape, 1.5, dtype=np.float32), np.full(shape, -1.01, dtype=np.float32)]
    for action in bad:
        with raises(InvalidArgumentError, "action"):
            env.step(action)
    assert_not_advanced(env)


@pytest.mark.filterwarnings("ignore:.*render_mode:UserWarning")  # gymnasium's, before ours
@pytest.mark.parametrize("argument, value, allowed", [
    ("reward", "speed", "accuracy"),
    ("constraint", "energy", "latency"),
    ("importance", "l3", "bn_scale"),
    ("constraint_mode", "lagrange", "project"),
    ("obs_mode", "image", "padded"),
    ("render_mode", "human", "ansi"),
])
def test_unknown_names(task, net, argument, value, allowed) -> None:
    with raises(InvalidArgumentError, argument, value, allowed):
        gym.make("LayerRatio-v0", model=net, val_data=task.val_data, **{argument: value})


def test_a_budget_value_is_taken_whole(task, net) -> None:
    """budget= takes a prune_gym.budget.Budget (fraction, constraint, round_to together);
    giving its parts again beside it is refused."""
    from prune_gym.budget import Budget

    env = gym.make("DNNGraph-v0", model=net, val_data=task.val_data,
                   budget=Budget(0.6, "params", round_to=2)).unwrapped
    assert (env.budget, env.constraint, env.round_to) == (0.6, "params", 2)
    assert env.bound.limit == 0.6 * net.base_params
    with pytest.raises(InvalidArgumentError, match="inside it"):
        gym.make("DNNGraph-v0", model=net, val_data=task.val_data, budget=Budget(0.6),
                 constraint="params")


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, float("nan"), "half", True])
def test_budget_outside_range(task, net, budget) -> None:
    with raises(InvalidArgumentError, "budget"):
        gym.make("DNNGraph-v0", model=net, val_data=task.val_data, budget=budget)


@pytest.mark.parametrize("env_id, kwargs", [
    ("LayerRatio-v0", {}),
    ("LayerRatio-v0", {"max_ratio": 0.5}),
    ("DNNGraph-v0", {"max_steps": 1}),
    ("ChannelMask-v0", {}),
    ("ChannelMask-v0", {"constraint": "params"}),
])
def test_unreachable_budget_names_smallest_ratio(task, net, env_id, kwargs) -> None:
    with pytest.raises(InvalidArgumentError, match="budget") as caught:
        gym.make(env_id, model=net, val_data=task.val_data, budget=1e-4, **kwargs)
    smallest = float(re.search(r"choose budget >= ([0-9.]+)", str(caught.value)).group(1))
    assert 1e-4 < smallest < 1
    # the smallest reachable ratio really is reachable
    gym.make(env_id, model=net, val_data=task.val_data, budget=smallest + 1e-4, **kwargs)


@pytest.mark.parametrize("kwargs, words", [
    ({"max_ratio": 0.0}, ["max_ratio"]),
    ({"max_ratio": 1.5}, ["max_ratio"]),
    ({"finetune_steps": -1}, ["finetune_steps"]),
    ({"finetune_steps": 5, "train_data": None}, ["finetune_steps", "train_data"]),
    ({"finetune_lr": 0}, ["finetune_lr"]),
    ({"bn_recalibration": 2}, ["bn_recalibration", "train_data"]),
    ({"eval_samples": 0}, ["eval_samples"]),
    ({"seed": -1}, ["seed"]),
    ({"importance": "taylor"}, ["taylor", "train_data"]),
])
def test_bad_options(task, net, kwargs, words) -> None:
    with raises(InvalidArgumentError, *words):
        gym.make("LayerRatio-v0", model=net, val_data=task.val_data, **kwargs)


# The environment hands some of its arguments on under other names (eval_samples becomes the
# Evaluator's max_samples, eval_batch_size its batch_size): a bad value must be reported under
# the name the user typed, and never under the name it was handed on as.
@pytest.mark.parametrize("env_id, argument, value, not_named", [
    ("LayerRatio-v0", "eval_samples", 0, "max_samples"),
    ("LayerRatio-v0", "eval_samples", 2.5, "max_samples"),
    ("DNNGraph-v0", "eval_batch_size", 0, r"\bbatch_size"),
    ("DNNGraph-v0", "eval_batch_size", np.float32(8), r"\bbatch_size"),
    ("ChannelMask-v0", "eval_cache", -1, "cache_size"),
    ("LayerRatio-v0", "bn_recalibration", -1, None),
    ("LayerRatio-v0", "bn_recalibration", "4", None),
    ("LayerRatio-v0", "evaluate", "accuracy", r"^fn\b"),
    ("LayerRatio-v0", "finetune_lr", float("nan"), None),
    ("LayerRatio-v0", "finetune_lr", "fast", None),
    ("LayerRatio-v0", "finetune_batch_size", 0, r"\bbatch_size"),
    ("LayerRatio-v0", "seed", 1.5, None),
    ("LayerRatio-v0", "max_ratio", True, None),
    ("DNNGraph-v0", "max_steps", np.int64(0), None),
    ("ChannelMask-v0", "max_channels", "many", None),
])
def test_bad_values_are_named_as_typed(task, net, env_id, argument, value, not_named) -> None:
    kwargs = {argument: value, "train_data": task.data.train.as_tuple()}
    if argument == "finetune_batch_size":
        # Taylor importance slices its calibration batch with it, before fine-tuning does
        kwargs.update(importance="taylor", finetune_steps=2)
    with pytest.raises(InvalidArgumentError) as caught:
        gym.make(env_id, model=net, val_data=task.val_data, **kwargs)
    message = str(caught.value)
    assert argument in message and repr(value) in message
    if not_named:
        assert not re.search(not_named, message), message


def test_numpy_scalars_are_accepted_everywhere(task, net) -> None:
    """Values read out of arrays or configs (np.int64, np.float32) work like Python's."""
    env = gym.make("DNNGraph-v0", model=net, val_data=task.val_data,
                   train_data=task.data.train.as_tuple(), eval_samples=np.int64(40),
                   eval_batch_size=np.int32(7), eval_cache=np.int64(8),
                   bn_recalibration=np.int64(1), max_steps=np.int64(2),
                   max_ratio=np.float32(0.5), budget=np.float64(0.6), seed=np.int64(3),
                   finetune_steps=np.int64(1), finetune_lr=np.float32(0.01),
                   finetune_batch_size=np.int64(16))
    base = env.unwrapped
    assert len(base.evaluator.x) == 40 and base.evaluator.batch_size == 7
    assert base.max_steps == 2 and base.max_ratio == 0.5 and base.budget == pytest.approx(0.6)
    env.reset()
    *_, info = env.step(np.ones(env.action_space.shape, dtype=np.float32))
    assert 0.0 <= info["accuracy"] <= 1.0


def test_bad_max_steps(task, net) -> None:
    with raises(InvalidArgumentError, "max_steps"):
        gym.make("DNNGraph-v0", model=net, val_data=task.val_data, max_steps=0)


def test_unknown_task_lists_known_ones() -> None:
    with pytest.raises(TaskError) as caught:
        gym.make("DNNGraph-v0", model="imagenet-resnet9000-v7")
    message = str(caught.value)
    assert "model=" in message and "imagenet-resnet9000-v7" in message
    for name in list_tasks():
        assert name in message


def test_model_of_the_wrong_kind() -> None:
    with raises(InvalidArgumentError, "model", "nn.Module"):
        gym.make("LayerRatio-v0", model=42)
    with raises(InvalidArgumentError, "model", "factory"):
        gym.make("LayerRatio-v0", model=lambda: "not a model")


def test_missing_val_data(task) -> None:
    with raises(DataError, "val_data"):
        gym.make("LayerRatio-v0", model=task.model)


def test_non_finite_model_outputs(task) -> None:
    model = copy.deepcopy(task.model)
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    with raises(DataError, "not finite", "val_data"):
        gym.make("ChannelMask-v0", model=model, val_data=task.val_data)


def test_val_data_that_does_not_fit_the_model(task) -> None:
    x, y = task.val_data
    with raises(DataError, "val_data", "shape"):
        gym.make("LayerRatio-v0", model=task.model, val_data=(x.repeat(1, 3, 1, 1), y))
    with raises(DataError, "labels"):
        gym.make("LayerRatio-v0", model=task.model, val_data=(x, y + 10))
    with raises(DataError, "val_data"):
        gym.make("LayerRatio-v0", model=task.model, val_data=(x, y[:-1]))
    with raises(DataError, "labels"):
        gym.make("LayerRatio-v0", model=task.model, val_data=(x, y.float()))
    with raises(DataError, "val_data", "empty"):
        gym.make("LayerRatio-v0", model=task.model, val_data=(x[:0], y[:0]))


def test_errors_are_prune_gym_errors() -> None:
    for error in (InvalidArgumentError, DataError, EnvStateError, TaskError):
        assert issubclass(error, PruneGymError)
