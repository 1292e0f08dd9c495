"""RL-Pruner's settings, declared once: the defaults, their meaning and their checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from agents.rl_pruner.schedules import EXPLORE_STRATEGIES
from prune_gym.arguments import check_choice, check_int, check_number
from prune_gym.errors import InvalidArgumentError

__all__ = ["REWARDS", "RLPrunerConfig"]

REWARDS = ("acc", "acc_macs", "acc_macs_params")


@dataclass(frozen=True)
class RLPrunerConfig:
    """How :class:`~agents.rl_pruner.RLPruner` searches (every field checked on creation).

    Attributes:
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
        post_train_steps: distillation steps after each ``post_train_period`` pruning
            steps (0: no post-training; states stay keep counts of ``net``).
        post_train_period: pruning steps between post-trainings.
        post_train_lr, post_train_batch_size, kd_temperature, kd_ce_weight: the
            :func:`~prune_gym.finetune.distill` recipe.
        seed: seeds the sampling, exploration and post-training batches.
        verbose: 1 prints one line per pruning step.
    """

    prune_ratio: float = 0.01
    noise_var: float = 0.04
    sample_num: int = 8
    sample_step: int = 1
    gamma: float = 0.9
    lr_epoch: int = 10
    step_length: float = 0.08
    ppo_clip: float = 0.2
    greedy_epsilon: float = 0.0
    explore_strategy: str = "constant"
    reward: str = "acc"
    macs_coef: float = 0.25
    params_coef: float = 0.25
    reset_drop: float = 0.1
    post_train_steps: int = 0
    post_train_period: int = 1
    post_train_lr: float = 0.01
    post_train_batch_size: int = 64
    kd_temperature: float = 2.0
    kd_ce_weight: float = 0.75
    seed: int = 0
    verbose: int = 0

    def __post_init__(self) -> None:
        checked = {
            "prune_ratio": check_number(self.prune_ratio, "prune_ratio", low=0.0, high=1.0,
                                        meaning="fraction of all channels removed per step"),
            "noise_var": check_number(self.noise_var, "noise_var", low=0.0,
                                      meaning="scale of the sampling noise"),
            "sample_num": check_int(self.sample_num, "sample_num", minimum=1),
            "sample_step": check_int(self.sample_step, "sample_step", minimum=1,
                                     meaning="look-ahead levels"),
            "gamma": check_number(self.gamma, "gamma", low=0.0, high=1.0, low_open=False),
            "lr_epoch": check_int(self.lr_epoch, "lr_epoch", minimum=1,
                                  meaning="RL epochs per pruning step"),
            "step_length": check_number(self.step_length, "step_length", low=0.0, high=1.0),
            "ppo_clip": check_number(self.ppo_clip, "ppo_clip", low=0.0, high=1.0,
                                     high_open=True),
            "greedy_epsilon": check_number(self.greedy_epsilon, "greedy_epsilon", low=0.0,
                                           high=1.0, low_open=False,
                                           meaning="exploration probability"),
            "explore_strategy": check_choice(self.explore_strategy, EXPLORE_STRATEGIES,
                                             "explore_strategy"),
            "reward": check_choice(self.reward, REWARDS, "reward"),
            "macs_coef": check_number(self.macs_coef, "macs_coef", low=0.0, low_open=False),
            "params_coef": check_number(self.params_coef, "params_coef", low=0.0,
                                        low_open=False),
            "reset_drop": check_number(self.reset_drop, "reset_drop", low=0.0, high=1.0,
                                       meaning="relative top-1 drop that resets the policy"),
            "post_train_steps": check_int(self.post_train_steps, "post_train_steps",
                                          meaning="distillation steps"),
            "post_train_period": check_int(self.post_train_period, "post_train_period",
                                           minimum=1),
            "post_train_lr": check_number(self.post_train_lr, "post_train_lr", low=0.0),
            "post_train_batch_size": check_int(self.post_train_batch_size,
                                               "post_train_batch_size", minimum=1),
            "kd_temperature": check_number(self.kd_temperature, "kd_temperature", low=0.0),
            "kd_ce_weight": check_number(self.kd_ce_weight, "kd_ce_weight", low=0.0,
                                         high=1.0, low_open=False),
            "seed": check_int(self.seed, "seed"),
            "verbose": check_int(self.verbose, "verbose"),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def updated(self, **settings: Any) -> RLPrunerConfig:
        """This config with ``settings`` changed (an unknown name is refused)."""
        unknown = sorted(set(settings) - set(self.names()))
        if unknown:
            raise InvalidArgumentError(f"{unknown} are not RL-Pruner settings; it takes "
                                       f"{', '.join(self.names())}")
        return replace(self, **settings) if settings else self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
