"""RL-Pruner (Wang & Kindratenko, 2024; github Beryex/RLPruner-CNN) on prune-gym's engine.

Not an SB3 algorithm: the policy is a distribution over channel groups of one pruning
step's removals, improved by sampling and interpolation, without gradients. A step:

1. ``lr_epoch`` RL epochs; each samples ``sample_num`` noisy distributions, removes the
   step's quota with each, scores the result
   ``Q = top-1 + macs_coef x MACs reduction + params_coef x params reduction``
   (plus ``gamma x`` the best Q of ``sample_num`` further samples, ``sample_step`` levels
   deep), and keeps the ``sample_num`` best in a replay buffer. When an epoch's best Q
   beats the step's best so far, the distribution moves toward the buffer's best sample
   (interpolation and ratio clip, :mod:`agents.rl_pruner.distribution`).
2. The next state is the buffer's best, or with probability epsilon a random buffer entry
   (``explore_strategy`` decays epsilon to 0 over the first 10 % of the steps).
3. If top-1 fell by more than ``reset_drop`` (relative), the distribution is reset to the
   width-proportional one and the step is searched again.
4. Optionally the state is post-trained by knowledge distillation from a teacher (the
   unpruned model, replaced by the student when the student scores better), and the
   fine-tuned model is analysed again to be pruned further.

Steps continue until the MACs (or params) budget holds. Rewards use the validation split
only (the public code scores on the test set), and the network's own importance
criterion picks channels inside a group (Taylor on calibration data in eval mode when
built from a task; the public code takes its gradients in train mode).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agents.baselines import budget_limit
from agents.rl_pruner import distribution
from agents.rl_pruner.schedules import EXPLORE_STRATEGIES, epsilon, planned_steps, split_quota
from prune_gym.arguments import check_callable, check_choice, check_int, check_number
from prune_gym.errors import CheckpointError, EnvStateError, InvalidArgumentError
from prune_gym.evaluate import Evaluator, as_tensors
from prune_gym.finetune import distill
from prune_gym.network import CONSTRAINTS, PrunableNetwork

REWARDS = ("acc", "acc_macs", "acc_macs_params")
FORMAT = "prune_gym.RLPruner/1"
CALIBRATION_SAMPLES = 100  # the paper's Taylor calibration set


class _OutOfEvaluations(Exception):
    """Raised inside a step when ``max_evaluations`` would be exceeded."""


def _from_task(task, evaluator, train_data, budget):
    """Network, evaluator, training data and budget of a task (name or Task)."""
    from prune_gym.tasks import Task, make_task

    if isinstance(task, str):
        task = make_task(task)
    if not isinstance(task, Task):
        raise InvalidArgumentError(f"net must be a PrunableNetwork, a task name such as "
                                   f"'digits-cnn-v1' or a Task; got {type(task).__name__}")
    train = task.data.train.as_tuple()
    calibration = (train[0][:CALIBRATION_SAMPLES], train[1][:CALIBRATION_SAMPLES])
    net = PrunableNetwork(task.model, task.example_inputs, importance="taylor",
                          calibration=calibration)
    if evaluator is None:  # scored as every method and environment is: BatchNorm recalibrated
        from agents.methods import make_evaluator

        evaluator = make_evaluator(task)
    return (net, evaluator,
            train if train_data is None else train_data,
            task.budget if budget is None else budget)


class RLPruner:
    """RL-Pruner: learns how to spread each pruning step's channel quota over the groups.

    Args:
        net: the :class:`~prune_gym.PrunableNetwork` to prune, or a task name / ``Task``
            (then the network is analysed with Taylor importance on 100 training images,
            and ``evaluator``, ``train_data`` and ``budget`` default to the task's).
        evaluator: scores states on the validation split (its ``evaluations`` counter is
            what ``max_evaluations`` limits).
        budget: fraction of the original ``constraint`` metric to keep, in (0, 1].
        constraint: ``"macs"`` or ``"params"``.
        prune_ratio: fraction of the original channels (over all groups) removed per step;
            the paper's 75-step VGG run implies 0.01.
        noise_var: scale of the sampling noise (code default 0.04, ``scripts/flexible.sh``).
        sample_num: samples per level and replay-buffer size (8, ``RL_MAX_GENERATE_NUM``).
        sample_step: look-ahead depth in levels (1: no look-ahead; the settings had 1-2).
        gamma: discount of the look-ahead (0.9, ``RL_DISCOUNT_FACTOR``).
        lr_epoch: RL epochs per pruning step (the paper: 10).
        step_length: interpolation step toward the best sample (0.08, ``RL_STEP_LENGTH``).
        ppo_clip: per-group ratio clip (0.2, ``RL_PPO_CLIP`` and ``flexible.sh``).
        greedy_epsilon: initial exploration rate in [0, 1] (0 in the scripts; the paper
            also tries 0.2 and 0.4).
        explore_strategy: ``"constant"``, ``"linear"`` or ``"cosine"`` decay of epsilon.
        reward: ``"acc"`` (Q = top-1), ``"acc_macs"`` (+ ``macs_coef`` x MACs reduction) or
            ``"acc_macs_params"`` (+ ``params_coef`` x params reduction as well), the
            paper's three reward strategies (its ``Q_FLOP_coef``/``Q_Para_coef``).
        macs_coef, params_coef: the coefficients (ours: 0.25; the code's default is 0).
        reset_drop: relative top-1 drop of one step that resets the distribution (0.1).
        train_data: ``(x, y)`` training tensors for post-training.
        post_train_steps: distillation steps after each ``post_train_period`` pruning
            steps (0: no post-training; states stay keep counts of ``net``).
        post_train_period: pruning steps between post-trainings.
        post_train_lr, post_train_batch_size, kd_temperature, kd_ce_weight: the
            :func:`~prune_gym.finetune.distill` recipe.
        seed: seeds the sampling, exploration and post-training batches.
        verbose: 1 prints one line per pruning step.

    Attributes:
        history: one dict per improvement of the best feasible state: ``evaluations`` (this
            agent's evaluations so far), ``best_val_accuracy``, ``keep``, ``step``.
        step_log: one dict per pruning step (keep, accuracy, ratios, best Q, epsilon, reset).
        num_evaluations: evaluations this agent has asked the evaluator for.
        distribution: the current policy (one probability per group of ``net.groups``).
    """

    def __init__(self, net, evaluator: Evaluator | None = None, *, budget: float | None = None,
                 constraint: str = "macs", prune_ratio: float = 0.01, noise_var: float = 0.04,
                 sample_num: int = 8, sample_step: int = 1, gamma: float = 0.9,
                 lr_epoch: int = 10, step_length: float = 0.08, ppo_clip: float = 0.2,
                 greedy_epsilon: float = 0.0, explore_strategy: str = "constant",
                 reward: str = "acc", macs_coef: float = 0.25, params_coef: float = 0.25,
                 reset_drop: float = 0.1, train_data=None, post_train_steps: int = 0,
                 post_train_period: int = 1, post_train_lr: float = 0.01,
                 post_train_batch_size: int = 64, kd_temperature: float = 2.0,
                 kd_ce_weight: float = 0.75, seed: int = 0, verbose: int = 0):
        if not isinstance(net, PrunableNetwork):
            net, evaluator, train_data, budget = _from_task(net, evaluator, train_data, budget)
        if not isinstance(evaluator, Evaluator):
            raise InvalidArgumentError(
                f"evaluator must be a prune_gym.evaluate.Evaluator on the validation split; got "
                f"{type(evaluator).__name__}")
        if budget is None:
            raise InvalidArgumentError("budget is required: the fraction of the original MACs "
                                       "(or params) to keep, e.g. budget=0.5")
        self.constraint = check_choice(constraint, CONSTRAINTS, "constraint")
        if self.constraint == "latency":
            # each step re-analyses the pruned network, whose groups a latency model fitted
            # on the original no longer describes
            raise InvalidArgumentError(
                "constraint='latency' is not for RL-Pruner: it re-analyses the network at "
                "every step, and the latency model describes the original's groups; use "
                "constraint='macs' or 'params', or an environment agent")
        self.limit = budget_limit(net, budget, self.constraint)
        self.budget = float(budget)
        self.net, self.evaluator = net, evaluator
        self.sizes = np.array([g.size for g in net.groups], dtype=np.int64)
        self.prune_ratio = check_number(prune_ratio, "prune_ratio", low=0.0, high=1.0,
                                        meaning="fraction of all channels removed per step")
        self.quota = int(self.sizes.sum() * self.prune_ratio)
        if self.quota < 1:
            raise InvalidArgumentError(
                f"prune_ratio={prune_ratio} removes no channel per step: the network has "
                f"{int(self.sizes.sum())} channels; use prune_ratio >= "
                f"{math.ceil(1e4 / self.sizes.sum()) / 1e4}")
        self.noise_var = check_number(noise_var, "noise_var", low=0.0,
                                      meaning="scale of the sampling noise")
        self.sample_num = check_int(sample_num, "sample_num", minimum=1)
        self.sample_step = check_int(sample_step, "sample_step", minimum=1,
                                     meaning="look-ahead levels")
        self.gamma = check_number(gamma, "gamma", low=0.0, high=1.0, low_open=False)
        self.lr_epoch = check_int(lr_epoch, "lr_epoch", minimum=1,
                                  meaning="RL epochs per pruning step")
        self.step_length = check_number(step_length, "step_length", low=0.0, high=1.0)
        self.ppo_clip = check_number(ppo_clip, "ppo_clip", low=0.0, high=1.0, high_open=True)
        self.greedy_epsilon = check_number(greedy_epsilon, "greedy_epsilon", low=0.0, high=1.0,
                                           low_open=False, meaning="exploration probability")
        self.explore_strategy = check_choice(explore_strategy, EXPLORE_STRATEGIES,
                                             "explore_strategy")
        self.reward = check_choice(reward, REWARDS, "reward")
        self.macs_coef = check_number(macs_coef, "macs_coef", low=0.0, low_open=False)
        self.params_coef = check_number(params_coef, "params_coef", low=0.0, low_open=False)
        self.reset_drop = check_number(reset_drop, "reset_drop", low=0.0, high=1.0,
                                       meaning="relative top-1 drop that resets the policy")
        self.post_train_steps = check_int(post_train_steps, "post_train_steps",
                                          meaning="distillation steps")
        self.post_train_period = check_int(post_train_period, "post_train_period", minimum=1)
        self.post_train_lr = check_number(post_train_lr, "post_train_lr", low=0.0)
        self.post_train_batch_size = check_int(post_train_batch_size, "post_train_batch_size",
                                               minimum=1)
        self.kd_temperature = check_number(kd_temperature, "kd_temperature", low=0.0)
        self.kd_ce_weight = check_number(kd_ce_weight, "kd_ce_weight", low=0.0, high=1.0,
                                         low_open=False)
        self.seed = check_int(seed, "seed")
        self.verbose = check_int(verbose, "verbose")
        self.train_data = None
        if train_data is not None:
            self.train_data = as_tensors(train_data, "train_data")
        if self.post_train_steps and self.train_data is None:
            raise InvalidArgumentError("post_train_steps > 0 needs train_data: (x, y) tensors "
                                       "of the training split to distil on")
        self._config = {k: getattr(self, k) for k in (
            "budget", "constraint", "prune_ratio", "noise_var", "sample_num", "sample_step",
            "gamma", "lr_epoch", "step_length", "ppo_clip", "greedy_epsilon",
            "explore_strategy", "reward", "macs_coef", "params_coef", "reset_drop",
            "post_train_steps", "post_train_period", "post_train_lr", "post_train_batch_size",
            "kd_temperature", "kd_ce_weight", "seed", "verbose")}
        self._reset_state()

    # -- state ------------------------------------------------------------------------------
    def _reset_state(self) -> None:
        # post-training: the current (fine-tuned) network and the teacher
        self._version = 0
        self._current = self.net
        self._map = np.arange(len(self.sizes))
        self._adopted = self.sizes.copy()  # widths of the current network's groups
        self._teacher: nn.Module | None = None
        self._teacher_acc: float | None = None
        self._max_evaluations: int | None = None
        self._chosen = False
        self.counts = self.sizes.copy()
        self.distribution = distribution.mean_distribution(self.counts)
        self.rng = np.random.default_rng(self.seed)
        self.steps_done = 0
        self.planned = planned_steps(self._fits, self.counts, self.quota)
        self.epsilon = self.greedy_epsilon
        self.num_evaluations = 0
        self.history: list[dict] = []
        self.step_log: list[dict] = []
        self.best: dict | None = None
        self._best_model: nn.Module | None = None
        self._prev_acc: float | None = None
        self._memo: dict[tuple, float] = {}
        self._buffer: list[dict] = []
        self.exhausted = False
        self.done = False

    @property
    def keep(self) -> list[int]:
        """Channels each group of ``net`` keeps in the current state."""
        return [int(c) for c in self.counts]

    def _current_keep(self, counts) -> list[int]:
        """``counts`` as a keep state of the current network (groups at one channel are not
        groups of a re-analysed network)."""
        return [int(counts[i]) for i in self._map]

    def _price(self, counts) -> tuple[int, int]:
        if self._current is self.net:
            return self.net.price([int(c) for c in counts])
        return self._current.price(self._current_keep(counts))

    def _fits(self, counts) -> bool:
        macs, params = self._price(counts)
        return (macs if self.constraint == "macs" else params) <= self.limit

    def q_value(self, keep, accuracy: float) -> float:
        """The reward of a state: ``accuracy`` plus the weighted MACs and params reductions
        that ``reward`` selects (``1 - metric / original metric``)."""
        return self._q(np.asarray(keep, dtype=np.int64), float(accuracy))

    @property
    def teacher_accuracy(self) -> float | None:
        """Validation top-1 of the distillation teacher (the unpruned model until a
        post-trained state beats it); None before :meth:`learn`."""
        return self._teacher_acc

    def _q(self, counts, accuracy: float) -> float:
        macs, params = self._price(counts)
        q = accuracy
        if self.reward != "acc":
            q += self.macs_coef * (1.0 - macs / self.net.base_macs)
        if self.reward == "acc_macs_params":
            q += self.params_coef * (1.0 - params / self.net.base_params)
        return q

    # -- evaluation -------------------------------------------------------------------------
    def _accuracy(self, counts) -> float:
        """Validation top-1 of ``counts`` (each state evaluated once; counts toward the
        evaluation limit), tracking the best feasible state."""
        key = (self._version, *(int(c) for c in counts))
        if key in self._memo:
            return self._memo[key]
        if self._max_evaluations is not None and self.num_evaluations >= self._max_evaluations:
            raise _OutOfEvaluations
        before = self.evaluator.evaluations
        if self._current is self.net:
            result = self.evaluator.evaluate_keep(self.net, [int(c) for c in counts])
        else:  # a fine-tuned network: its own states, never the evaluator's keep cache
            with self._current.pruned(self._current_keep(counts)) as model:
                result = self.evaluator.evaluate(model)
        self.num_evaluations += self.evaluator.evaluations - before
        accuracy = float(result.accuracy)
        self._memo[key] = accuracy
        if self._fits(counts) and (self.best is None or accuracy > self.best["val_accuracy"]):
            self._record_best(counts, accuracy)
        return accuracy

    def _record_best(self, counts, accuracy: float) -> None:
        macs, params = self._price(counts)
        keep = [int(c) for c in counts]
        self.best = {"keep": keep, "val_accuracy": accuracy,
                     "macs_ratio": macs / self.net.base_macs,
                     "params_ratio": params / self.net.base_params, "step": self.steps_done}
        if self._current is not self.net:
            self._best_model = self._current.export(self._current_keep(counts))
        self.history.append({"evaluations": self.num_evaluations,
                             "best_val_accuracy": accuracy, "keep": keep,
                             "step": self.steps_done})

    # -- one pruning step -------------------------------------------------------------------
    def _sample(self, counts: np.ndarray, depth: int) -> list[float]:
        """Q of ``sample_num`` samples from ``counts`` (depth-first look-ahead); at the top
        level each sample is offered to the replay buffer."""
        qs = []
        for _ in range(self.sample_num):
            action = distribution.sample(self.distribution, counts, self.rng, self.noise_var)
            child = counts - split_quota(action, self.quota, counts)
            accuracy = self._accuracy(child)
            q = self._q(child, accuracy)
            # the schedule ends at the budget, so a feasible child has no successor
            if depth + 1 < self.sample_step and (child > 1).any() and not self._fits(child):
                q += self.gamma * max(self._sample(child, depth + 1))
            qs.append(q)
            if depth == 0:
                self._offer({"q": q, "action": action, "counts": child, "accuracy": accuracy})
        return qs

    def _offer(self, entry: dict) -> None:
        """Keep the ``sample_num`` best samples: a new one replaces the worst if not worse."""
        if len(self._buffer) < self.sample_num:
            self._buffer.append(entry)
            return
        worst = int(np.argmin([e["q"] for e in self._buffer]))
        if entry["q"] >= self._buffer[worst]["q"]:
            self._buffer[worst] = entry

    def _search(self, counts: np.ndarray) -> float:
        """``lr_epoch`` RL epochs from ``counts``; the policy moves when an epoch's best Q
        beats the step's best so far. Returns that best Q."""
        self._buffer = []
        best_q = -math.inf
        for _ in range(self.lr_epoch):
            q = max(self._sample(counts, 0))
            if q > best_q:
                best_q = q
                top = self._buffer[int(np.argmax([e["q"] for e in self._buffer]))]
                self.distribution = distribution.update(
                    self.distribution, top["action"], counts, self.step_length, self.ppo_clip)
        return best_q

    def _choose(self) -> dict:
        """Epsilon-greedy pick of the next state among the buffered samples."""
        explore = self.rng.random() < self.epsilon
        if explore:
            return self._buffer[int(self.rng.integers(len(self._buffer)))]
        return self._buffer[int(np.argmax([e["q"] for e in self._buffer]))]

    def _step(self) -> dict:
        counts = self.counts
        self.distribution = distribution.renormalise(self.distribution, counts)
        self._chosen = False
        best_q = self._search(counts)
        entry = self._choose()
        reset = False
        if self._prev_acc and (self._prev_acc - entry["accuracy"]) / self._prev_acc \
                > self.reset_drop:
            reset = True
            self.distribution = distribution.mean_distribution(counts)
            best_q = self._search(counts)
            entry = self._choose()
        self.counts = entry["counts"]
        self._chosen = True
        accuracy = entry["accuracy"]
        if self.post_train_steps and (self.steps_done + 1) % self.post_train_period == 0:
            accuracy = self._post_train()
        self._prev_acc = accuracy
        return {"best_q": best_q, "reset": reset, "val_accuracy": accuracy}

    def _post_train(self) -> float:
        """Distil the current state from the teacher, analyse the result as the network to
        prune next, score it, and make it the teacher if it beats the teacher."""
        if self._teacher is None:
            self._teacher = self.net.original_copy().eval()
        model = self._current.export(self._current_keep(self.counts))
        distill(model, self._teacher, self.train_data, steps=self.post_train_steps,
                batch_size=self.post_train_batch_size, lr=self.post_train_lr,
                temperature=self.kd_temperature, ce_weight=self.kd_ce_weight,
                seed=self.seed + self.steps_done)
        self._adopt(model)
        accuracy = self._accuracy(self.counts)
        if self._teacher_acc is None or accuracy > self._teacher_acc:
            self._teacher, self._teacher_acc = copy.deepcopy(model).eval(), accuracy
        return accuracy

    def _adopt(self, model: nn.Module, counts=None) -> None:
        """Make the fine-tuned ``model`` (pruned to ``counts``, default ``self.counts``) the
        network to prune."""
        net = self.net
        counts = self.counts if counts is None else np.asarray(counts, dtype=np.int64)
        current = PrunableNetwork(model, net.example_inputs, importance=net.importance,
                                  calibration=net.calibration,
                                  ignored_layers=net.ignored_layers, seed=net.seed)
        index = {g.name: i for i, g in enumerate(current.groups)}
        mapping = []
        for g, c in zip(net.groups, counts):
            i = index.get(g.name)
            if i is None and c > 1 or i is not None and current.groups[i].size != c:
                raise InvalidArgumentError(
                    f"the post-trained model's group {g.name!r} does not match its pruned "
                    f"width {int(c)}; post-training needs the pruned network to analyse into "
                    "the same groups (run with post_train_steps=0)")
            if i is not None:
                mapping.append(i)
        self._current, self._map = current, np.asarray(mapping, dtype=np.int64)
        self._adopted = counts.copy()
        self._version += 1
        self._memo = {}

    # -- public API -------------------------------------------------------------------------
    def learn(self, max_evaluations: int | None = None, *, max_steps: int | None = None,
              callback: Callable[[dict], bool | None] | None = None) -> RLPruner:
        """Prune step by step until the budget holds.

        Args:
            max_evaluations: limit on this agent's evaluations in total (over every
                ``learn`` call). When it is reached the remaining steps split their quota by
                the current distribution, without noise, search or evaluation.
            max_steps: stop after this many pruning steps in this call (resume later with
                another ``learn``; with :meth:`save` and :meth:`load` in between, the run is
                the same as an uninterrupted one).
            callback: called with each step's log entry; returning ``False`` stops.

        Returns:
            ``self``.
        """
        self._max_evaluations = check_int(max_evaluations, "max_evaluations", optional=True)
        max_steps = check_int(max_steps, "max_steps", optional=True)
        check_callable(callback, "callback", "callback(step_info) -> bool | None")
        taken = 0
        try:
            if self._prev_acc is None and not self.exhausted:
                self._prev_acc = self._accuracy(self.counts)
                self._teacher_acc = self._prev_acc
        except _OutOfEvaluations:
            self.exhausted = True
        while not self.done and (max_steps is None or taken < max_steps):
            if self._fits(self.counts) or not (self.counts > 1).any():
                self.done = True
                break
            info = {"reset": False, "best_q": None, "val_accuracy": None}
            if not self.exhausted:
                try:
                    info = self._step()
                except _OutOfEvaluations:
                    self.exhausted = True
                    self._finish_interrupted_step()
            else:
                self._mean_step()
            self._memo = {k: v for k, v in self._memo.items()
                          if k[0] == self._version and sum(k[1:]) < int(self.counts.sum())}
            self.steps_done += 1
            taken += 1
            self.epsilon = epsilon(self.explore_strategy, self.greedy_epsilon,
                                   self.steps_done, self.planned)
            entry = self._log_step(info)
            if callback is not None and callback(entry) is False:
                break
        if self._fits(self.counts) or not (self.counts > 1).any():
            self.done = True
        return self

    def _finish_interrupted_step(self) -> None:
        """The step the evaluations ran out in ends on its best buffered sample, if any."""
        if self._chosen:
            return
        if self._buffer:
            self.counts = self._buffer[int(np.argmax([e["q"] for e in self._buffer]))]["counts"]
        else:
            self._mean_step()

    def _mean_step(self) -> None:
        self.distribution = distribution.renormalise(self.distribution, self.counts)
        self.counts = self.counts - split_quota(self.distribution, self.quota, self.counts)

    def _log_step(self, info: dict) -> dict:
        macs, params = self._price(self.counts)
        entry = {"step": self.steps_done, "keep": self.keep,
                 "val_accuracy": info["val_accuracy"], "macs_ratio": macs / self.net.base_macs,
                 "params_ratio": params / self.net.base_params, "best_q": info["best_q"],
                 "reset": info["reset"], "epsilon": self.epsilon,
                 "evaluations": self.num_evaluations, "searched": info["best_q"] is not None}
        self.step_log.append(entry)
        if self.verbose:
            acc = "-" if entry["val_accuracy"] is None else f"{entry['val_accuracy']:.4f}"
            print(f"RLPruner step {entry['step']}: {self.constraint} "
                  f"{entry[self.constraint + '_ratio']:.3f}  val acc {acc}  "
                  f"evaluations {entry['evaluations']}{'  reset' if entry['reset'] else ''}")
        return entry

    def predict(self) -> list[int]:
        """The result: channels kept per group of ``net`` (the best feasible state scored,
        else the final state of the schedule when no feasible state was scored)."""
        if self.best is not None:
            return list(self.best["keep"])
        if not self.done:
            raise EnvStateError("RLPruner.predict() needs a state within the budget: call "
                                "learn() until it finishes first")
        return self.keep

    def export(self) -> nn.Module:
        """The pruned model of :meth:`predict` as a new ``nn.Module`` in eval mode: the
        post-trained one when post-training is on (channels of a post-trained network are
        its own, so only this model, not ``net.export(predict())``, is that state).
        BatchNorm is re-estimated as the evaluator does when it recalibrates."""
        keep = self.predict()
        if self.best is not None and self._best_model is not None:
            model = copy.deepcopy(self._best_model)
        elif self._current is not self.net and keep == self.keep:
            model = self._current.export(self._current_keep(self.counts))
        else:
            model = self.net.export(keep)
        self.evaluator.recalibrate(model)
        return model.eval()

    def save(self, path) -> None:
        """Write everything needed to continue: settings, policy, RNG, logs, and the
        post-trained networks (not ``net`` or the evaluator: :meth:`load` takes them)."""
        state = {
            "format": FORMAT, "config": self._config, "sizes": self.sizes.tolist(),
            "counts": self.counts.tolist(), "distribution": self.distribution.tolist(),
            "rng": self.rng.bit_generator.state, "steps_done": self.steps_done,
            "planned": self.planned, "epsilon": self.epsilon,
            "num_evaluations": self.num_evaluations, "history": self.history,
            "step_log": self.step_log, "best": self.best, "best_model": self._best_model,
            "prev_acc": self._prev_acc, "memo": self._memo, "exhausted": self.exhausted,
            "done": self.done, "version": self._version,
            "current": None if self._current is self.net else self._current.original_copy(),
            "adopted": self._adopted.tolist(),
            "teacher": self._teacher, "teacher_acc": self._teacher_acc,
        }
        torch.save(state, Path(path))

    @classmethod
    def load(cls, path, net, evaluator: Evaluator | None = None, *, train_data=None,
             **overrides) -> RLPruner:
        """An agent saved with :meth:`save`, on ``net`` (the same network or task) and
        ``evaluator``; ``overrides`` change settings such as ``verbose``."""
        try:
            state = torch.load(Path(path), weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
            raise CheckpointError(f"cannot read an RLPruner checkpoint from {path!r} "
                                  f"({exc})") from exc
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{path!r} is not an RLPruner checkpoint ({FORMAT})")
        agent = cls(net, evaluator, train_data=train_data, **{**state["config"], **overrides})
        if agent.sizes.tolist() != state["sizes"]:
            raise InvalidArgumentError(
                f"net has groups of sizes {agent.sizes.tolist()} but the checkpoint was made "
                f"on {state['sizes']}; load it with the same network")
        agent.counts = np.asarray(state["counts"], dtype=np.int64)
        agent.distribution = np.asarray(state["distribution"], dtype=np.float64)
        agent.rng.bit_generator.state = state["rng"]
        for name in ("steps_done", "planned", "epsilon", "num_evaluations", "history",
                     "step_log", "best", "exhausted", "done"):
            setattr(agent, name, state[name])
        agent._best_model, agent._prev_acc = state["best_model"], state["prev_acc"]
        agent._teacher, agent._teacher_acc = state["teacher"], state["teacher_acc"]
        if state["current"] is not None:
            agent._adopt(state["current"], state["adopted"])
        agent._version, agent._memo = state["version"], state["memo"]
        return agent
