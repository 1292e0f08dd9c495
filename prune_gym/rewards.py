"""Episode rewards by name: what an environment pays for the network an episode produced.

Rewards are separate from the constraint on purpose: the environments are constrained MDPs,
so the budget violation travels as ``info["cost"]`` and a reward only scores the network.
A reward is stateful only where the literature makes it so (self-competition remembers the
best feasible result), which is why rewards are small objects rather than functions.
"""

from __future__ import annotations

import math

from prune_gym.errors import InvalidArgumentError

REWARDS = ("accuracy", "acc_log_macs", "self_competition")


class Reward:
    """Scores the network of a finished episode; subclasses say how."""

    name = ""

    def __call__(self, accuracy: float, macs: int, feasible: bool) -> float:
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget what earlier episodes taught (only stateful rewards have anything)."""


class AccuracyReward(Reward):
    """Validation accuracy in [0, 1]: the plain CMDP objective."""

    name = "accuracy"

    def __call__(self, accuracy: float, macs: int, feasible: bool) -> float:
        return float(accuracy)


class AccLogMacsReward(Reward):
    """AMC's ``-error * log(MACs)``: prefers small networks even among feasible ones."""

    name = "acc_log_macs"

    def __call__(self, accuracy: float, macs: int, feasible: bool) -> float:
        return -(1.0 - float(accuracy)) * math.log(max(int(macs), 1))


class SelfCompetitionReward(Reward):
    """``accuracy - best``, where ``best`` is the best feasible accuracy seen so far.

    As in Balemans et al., the agent competes with its own record instead of an absolute
    scale, so the signal stays informative once every episode scores well. ``best`` starts
    at 0 and is updated only by feasible episodes; it survives ``reset()`` (it is the point
    of the reward) and can be cleared with ``reset(options={"reset_reward": True})``.
    """

    name = "self_competition"

    def __init__(self) -> None:
        self.best = 0.0

    def __call__(self, accuracy: float, macs: int, feasible: bool) -> float:
        reward = float(accuracy) - self.best
        if feasible:
            self.best = max(self.best, float(accuracy))
        return reward

    def reset_state(self) -> None:
        self.best = 0.0


_BY_NAME = {cls.name: cls for cls in (AccuracyReward, AccLogMacsReward, SelfCompetitionReward)}


def make_reward(name: str) -> Reward:
    """The reward called ``name``; raises naming the ``reward`` argument if unknown."""
    if not isinstance(name, str) or name not in _BY_NAME:
        raise InvalidArgumentError(
            f"reward={name!r} is not a known reward; choose one of {', '.join(REWARDS)}")
    return _BY_NAME[name]()
