"""RL-Pruner: reaches the budget on the embedded tasks, its policy arithmetic matches hand
computations, it resumes exactly, it spends exactly the evaluations it is given, and it
names bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

import agents.rl_pruner.rl_pruner as rl_module
from agents.baselines import budget_limit
from agents.rl_pruner import (
    RLPruner,
    epsilon,
    mean_distribution,
    renormalise,
    sample,
    split_quota,
    update,
)
from prune_gym import PrunableNetwork
from prune_gym.errors import CheckpointError, EnvStateError, InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.tasks import make_task
from tests.time_limit import time_limit

FAST = {"prune_ratio": 0.05, "sample_num": 3, "lr_epoch": 2}


@pytest.fixture(scope="module")
def cnn():
    task = make_task("digits-cnn-v1")
    return task, PrunableNetwork(task.model, task.example_inputs)


@pytest.fixture(scope="module")
def resnet():
    task = make_task("digits-resnet-v1")
    return task, PrunableNetwork(task.model, task.example_inputs)


# -- the policy's arithmetic, by hand ---------------------------------------------------------
def test_update_interpolates_then_clips_the_ratio():
    # pd' = pd + 0.5 (best - pd) = [.3, .3, .4]; ratios [.6, 1, 2] clip to [.8, 1, 1.2];
    # [.4, .3, .24] renormalised by .94
    out = update([0.5, 0.3, 0.2], [0.1, 0.3, 0.6], [5, 5, 5], step_length=0.5, ppo_clip=0.2)
    np.testing.assert_allclose(out, [0.4 / 0.94, 0.3 / 0.94, 0.24 / 0.94], rtol=1e-12)
    # a small move passes the clip untouched: pd + 0.08 (best - pd)
    out = update([0.5, 0.5], [0.4, 0.6], [3, 3], step_length=0.08, ppo_clip=0.2)
    np.testing.assert_allclose(out, [0.492, 0.508], rtol=1e-12)


def test_groups_at_one_channel_get_no_mass_and_the_rest_is_renormalised():
    np.testing.assert_allclose(renormalise([0.2, 0.4, 0.4], [1, 5, 5]), [0.0, 0.5, 0.5])
    # [0, .5, .5] -> moved [0, .1, .9] -> ratios [., .2, 1.8] clipped to [.8, 1.2] -> [0, .4, .6]
    out = update([0.2, 0.4, 0.4], [0.0, 0.1, 0.9], [1, 5, 5], step_length=1.0, ppo_clip=0.2)
    np.testing.assert_allclose(out, [0.0, 0.4, 0.6], rtol=1e-12)
    np.testing.assert_allclose(mean_distribution([16, 32, 1, 16]), [0.25, 0.5, 0.0, 0.25])
    np.testing.assert_allclose(renormalise([0.0, 1.0], [4, 4]), [1e-5 / (1 + 1e-5),
                                                                 1 / (1 + 1e-5)])


def test_samples_are_floored_renormalised_noisy_copies():
    pd = mean_distribution([8, 16, 1, 8])
    rng, replay = np.random.default_rng(3), np.random.default_rng(3)
    noise = replay.standard_normal(4) * 0.04 * replay.random()
    np.testing.assert_allclose(sample(pd, [8, 16, 1, 8], rng, 0.04),
                               renormalise(pd + noise, [8, 16, 1, 8]))
    wild = sample(pd, [8, 16, 1, 8], np.random.default_rng(0), 50.0)
    assert math.isclose(wild.sum(), 1.0) and wild[2] == 0.0
    assert (wild[[0, 1, 3]] > 0).all()  # floored before renormalising: never 0 if movable


def test_quota_split_hand_computed():
    # round(pd N) already sums to N
    assert split_quota(np.array([0.5, 0.3, 0.2]), 7, [9, 9, 9]).tolist() == [4, 2, 1]
    # 3.33 each rounds to 9 of 10: the first of the tied remainders takes the missing one
    assert split_quota(np.full(3, 1 / 3), 10, [9, 9, 9]).tolist() == [4, 3, 3]
    # 1.5 each rounds up to 4 of 3: one comes back from the first group
    assert split_quota(np.array([0.5, 0.5]), 3, [9, 9]).tolist() == [1, 2]
    # group 0 can give one channel only: its share goes to the largest remainder elsewhere
    assert split_quota(np.array([0.5, 0.25, 0.25]), 4, [2, 10, 10]).tolist() == [1, 2, 1]
    # a group at one channel never gives one, whatever mass it was handed
    assert split_quota(np.array([0.5, 0.25, 0.25]), 4, [1, 5, 5]).tolist() == [0, 2, 2]
    # more than can go: every group down to one channel
    assert split_quota(np.array([0.2, 0.8]), 50, [3, 4]).tolist() == [2, 3]


def test_quota_split_always_sums_exactly():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        counts = rng.integers(1, 40, n)
        pd = renormalise(rng.dirichlet(np.ones(n)), counts)
        quota = int(rng.integers(1, 60))
        take = split_quota(pd, quota, counts)
        assert take.sum() == min(quota, int((counts - 1).sum()))
        assert (take >= 0).all() and (take <= counts - 1).all()


def test_epsilon_schedules_hand_computed():
    e0, steps = 0.4, 40  # epsilon reaches 0 after 10 % of 40 = 4 steps
    assert [epsilon("linear", e0, t, steps) for t in range(6)] == pytest.approx(
        [0.4, 0.3, 0.2, 0.1, 0.0, 0.0])
    assert [epsilon("cosine", e0, t, steps) for t in range(6)] == pytest.approx(
        [0.4, 0.2 * (1 + math.cos(math.pi / 4)), 0.2, 0.2 * (1 - math.cos(math.pi / 4)),
         0.0, 0.0])
    assert [epsilon("constant", e0, t, steps) for t in range(6)] == pytest.approx(
        [0.4, 0.4, 0.4, 0.4, 0.4, 0.0])
    assert epsilon("linear", e0, 1, 5) == 0.0  # fewer than 10 steps: only step 0 explores


# -- the agent on the embedded tasks --------------------------------------------------------
@pytest.mark.parametrize(("which", "constraint"), [("cnn", "macs"), ("cnn", "params"),
                                                   ("resnet", "macs")])
def test_reaches_the_budget_on_the_embedded_tasks(request, which, constraint):
    task, net = request.getfixturevalue(which)
    evaluator = Evaluator(task.val_data)
    with time_limit(120):
        agent = RLPruner(net, evaluator, budget=0.5, constraint=constraint, seed=1,
                         **FAST).learn()
    limit = budget_limit(net, 0.5, constraint)
    keep = agent.predict()
    assert agent.done and net.metric(keep, constraint) <= limit
    assert net.metric(agent.keep, constraint) <= limit
    assert agent.num_evaluations == evaluator.evaluations > 0
    assert math.isclose(evaluator.evaluate_keep(net, keep).accuracy,
                        agent.best["val_accuracy"])
    assert agent.history[-1]["keep"] == keep
    assert agent.history[-1]["best_val_accuracy"] == agent.best["val_accuracy"]
    evals = [h["evaluations"] for h in agent.history]
    accs = [h["best_val_accuracy"] for h in agent.history]
    assert evals == sorted(evals) and accs == sorted(accs)
    # a fixed quota per step, until the budget held (and not one step longer)
    totals = [sum(g.size for g in net.groups)] + [sum(s["keep"]) for s in agent.step_log]
    assert all(a - b == agent.quota for a, b in zip(totals, totals[1:]))
    assert len(agent.step_log) == agent.steps_done
    assert all(net.metric(s["keep"], constraint) > limit for s in agent.step_log[:-1])


def test_policy_moves_at_most_once_per_epoch_and_only_on_improvement(cnn, monkeypatch):
    task, net = cnn
    agent = RLPruner(net, Evaluator(task.val_data), budget=0.5, prune_ratio=0.05,
                     sample_num=3, lr_epoch=6, noise_var=0.2, reset_drop=1.0, seed=2)
    epoch_best, updates = [], []
    sample_level, move = agent._sample, rl_module.distribution.update

    def record_level(counts, depth):
        qs = sample_level(counts, depth)
        if depth == 0:
            epoch_best.append(max(qs))
        return qs

    def record_update(*args, **kwargs):
        updates.append(args)
        return move(*args, **kwargs)

    monkeypatch.setattr(agent, "_sample", record_level)
    monkeypatch.setattr(rl_module.distribution, "update", record_update)
    before = agent.distribution.copy()
    agent.learn(max_steps=1)
    improvements = sum(q > max(epoch_best[:i], default=-math.inf)
                       for i, q in enumerate(epoch_best))
    assert len(epoch_best) == 6 and len(updates) == improvements >= 1
    assert not np.allclose(agent.distribution, before)


def test_q_values_by_reward_strategy(cnn):
    task, net = cnn
    evaluator = Evaluator(task.val_data)
    keep = [8, 16, 32]
    macs_red = 1 - net.macs(keep) / net.base_macs
    params_red = 1 - net.params(keep) / net.base_params
    for reward, expected in [("acc", 0.5), ("acc_macs", 0.5 + 0.3 * macs_red),
                             ("acc_macs_params", 0.5 + 0.3 * macs_red + 0.1 * params_red)]:
        agent = RLPruner(net, evaluator, budget=0.5, reward=reward, macs_coef=0.3,
                         params_coef=0.1)
        assert math.isclose(agent.q_value(keep, 0.5), expected)


def _run_trace(agent: RLPruner) -> dict:
    return {"keep": agent.keep, "predict": agent.predict(), "history": agent.history,
            "steps": [{k: v for k, v in s.items()} for s in agent.step_log],
            "pd": agent.distribution.tolist(), "evaluations": agent.num_evaluations}


def test_save_load_continue_equals_an_uninterrupted_run(cnn, tmp_path):
    task, net = cnn
    settings = dict(budget=0.4, prune_ratio=0.04, sample_num=3, sample_step=2, lr_epoch=2,
                    greedy_epsilon=0.4, explore_strategy="linear", reward="acc_macs",
                    seed=5)
    whole_eval = Evaluator(task.val_data)
    whole = RLPruner(net, whole_eval, **settings).learn()
    first_eval, second_eval = Evaluator(task.val_data), Evaluator(task.val_data)
    part = RLPruner(net, first_eval, **settings).learn(max_steps=3)
    assert not part.done and part.steps_done == 3
    part.save(tmp_path / "agent.pt")
    resumed = RLPruner.load(tmp_path / "agent.pt", net, second_eval).learn()
    assert _run_trace(resumed) == _run_trace(whole)
    assert first_eval.evaluations + second_eval.evaluations == whole_eval.evaluations


def test_post_training_distils_reanalyses_and_resumes(tmp_path):
    settings = dict(budget=0.5, prune_ratio=0.08, sample_num=2, lr_epoch=1,
                    post_train_steps=8, post_train_period=2, seed=0)
    with time_limit(240):
        whole = RLPruner("digits-cnn-v1", **settings).learn()
        part = RLPruner("digits-cnn-v1", **settings).learn(max_steps=3)
        part.save(tmp_path / "agent.pt")
        resumed = RLPruner.load(tmp_path / "agent.pt", "digits-cnn-v1").learn()
    assert whole.net.importance == "taylor"  # a task brings Taylor on calibration images
    assert _run_trace(resumed) == _run_trace(whole)
    assert whole.done and whole._current is not whole.net  # pruned from a fine-tuned model
    model = whole.export()
    pruned = PrunableNetwork(model, whole.net.example_inputs)
    assert pruned.base_macs <= budget_limit(whole.net, 0.5)
    assert math.isclose(whole.evaluator.evaluate(model).accuracy, whole.best["val_accuracy"])
    # the teacher is the unpruned model until a post-trained state (every 2nd step) beats it
    tuned = [s["val_accuracy"] for s in whole.step_log if s["step"] % 2 == 0]
    unpruned = whole.evaluator.evaluate_keep(whole.net, whole.sizes.tolist()).accuracy
    assert tuned and whole.teacher_accuracy == max(unpruned, *tuned)


@pytest.mark.parametrize("limit", [0, 1, 7])
def test_max_evaluations_is_spent_exactly(resnet, limit):
    task, net = resnet
    evaluator = Evaluator(task.val_data)
    agent = RLPruner(net, evaluator, budget=0.5, seed=0, **FAST).learn(max_evaluations=limit)
    assert evaluator.evaluations == agent.num_evaluations == limit
    assert agent.done and agent.exhausted
    assert net.macs(agent.keep) <= budget_limit(net, 0.5)
    assert not agent.step_log[-1]["searched"]  # the last steps split by the mean policy
    assert net.macs(agent.predict()) <= budget_limit(net, 0.5)


def test_generous_max_evaluations_is_not_reached(cnn):
    task, net = cnn
    evaluator = Evaluator(task.val_data)
    agent = RLPruner(net, evaluator, budget=0.5, seed=0, **FAST).learn(max_evaluations=10_000)
    assert agent.done and not agent.exhausted and evaluator.evaluations < 10_000


def test_predict_before_learning_is_refused(cnn):
    task, net = cnn
    with pytest.raises(EnvStateError, match="learn"):
        RLPruner(net, Evaluator(task.val_data), budget=0.5).predict()


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"prune_ratio": 0.0}, "prune_ratio"),
    ({"prune_ratio": -0.1}, "prune_ratio"),
    ({"prune_ratio": 0.005}, "prune_ratio"),  # 112 channels: no channel per step
    ({"noise_var": 0.0}, "noise_var"),
    ({"noise_var": -0.04}, "noise_var"),
    ({"budget": 0.001}, "budget"),  # below one channel per group
    ({"budget": None}, "budget"),
    ({"greedy_epsilon": 1.5}, "greedy_epsilon"),
    ({"greedy_epsilon": -0.1}, "greedy_epsilon"),
    ({"explore_strategy": "exponential"}, "explore_strategy"),
    ({"reward": "loss"}, "reward"),
    ({"constraint": "latency"}, "constraint"),
    ({"sample_num": 0}, "sample_num"),
    ({"lr_epoch": 0}, "lr_epoch"),
    ({"ppo_clip": 1.0}, "ppo_clip"),
    ({"post_train_steps": 5}, "train_data"),
    ({"seed": -1}, "seed"),
])
def test_bad_arguments_are_named(cnn, kwargs, name):
    task, net = cnn
    args = {"budget": 0.5, **kwargs}
    with pytest.raises(InvalidArgumentError, match=rf"\b{name}\b"):
        RLPruner(net, Evaluator(task.val_data), **args)


def test_bad_objects_and_checkpoints_are_named(cnn, resnet, tmp_path):
    task, net = cnn
    with pytest.raises(InvalidArgumentError, match="evaluator"):
        RLPruner(net, None, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="net"):
        RLPruner(42, budget=0.5)
    agent = RLPruner(net, Evaluator(task.val_data), budget=0.5)
    with pytest.raises(InvalidArgumentError, match="max_evaluations"):
        agent.learn(max_evaluations=-1)
    agent.save(tmp_path / "a.pt")
    with pytest.raises(InvalidArgumentError, match="net"):
        RLPruner.load(tmp_path / "a.pt", resnet[1], Evaluator(task.val_data))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk"):
        RLPruner.load(tmp_path / "junk.pt", net, Evaluator(task.val_data))
