"""The environments as RLlib environments (Ray is optional: ``pip install "prune-gym[ray]"``).

RLlib builds its environments itself, in every EnvRunner process, from a creator
registered by name that takes RLlib's ``env_config`` dict. :func:`register_rllib_envs`
registers the three ids under their Gymnasium names, so after it
``PPOConfig().environment("DNNGraph-v0", env_config={"model": "digits-cnn-v1"})`` runs our
environment with RLlib's own default model.

What RLlib's default models (new API stack; checked on ray 2.60) cannot take, and what is
done about it here:

* A ``Dict`` observation: RLlib's catalog has default encoders for a 1-D ``Box`` (an MLP)
  and an image ``Box`` (a CNN) only; anything else raises "No default encoder config". The
  padded graph ``Dict`` is flattened into one float32 ``Box`` by Gymnasium's
  ``FlattenObservation`` (its keys in the space's sorted order). ``flatten=False`` keeps the
  ``Dict`` for a custom RLModule (a GNN, say). ``obs_mode="graph"`` has no fixed size and
  cannot be flattened.
* A ``MultiBinary`` action (ChannelMask-v0): RLlib has no default distribution for it. It
  is shown to RLlib as ``MultiDiscrete([2] * S)``, a categorical per bit, which selects the
  same bits. RLlib's PPO does not read ``action_masks()``; the padded bits it may set are
  ignored by the environment, so every sampled action is still valid.

Nothing here imports Ray until :func:`register_rllib_envs` is called; :func:`make_rllib_env`
is a plain Gymnasium factory and works without it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import FlattenObservation

from prune_gym import ENV_IDS
from prune_gym.arguments import check_choice
from prune_gym.errors import InvalidArgumentError, MissingDependencyError

__all__ = ["RAY_INSTALL", "BitsAsCategories", "MissingRayError", "make_rllib_env",
           "register_rllib_envs", "require_ray"]

RAY_INSTALL = 'pip install "prune-gym[ray]"'


class MissingRayError(InvalidArgumentError, MissingDependencyError):
    """Ray (or RLlib) is needed for what was asked and is not installed.

    Both an :class:`InvalidArgumentError` (what was asked cannot be served here) and a
    :class:`MissingDependencyError` (an ``ImportError``), so either ``except`` works.
    """


def require_ray(what: str, module: str = "ray"):
    """Import and return ``module`` (``"ray"``, ``"ray.rllib"``...), or raise a
    :class:`MissingRayError` that says ``what`` needed it and how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingRayError(f"{what} needs {module}, which is not installed (or does not "
                              f"import: {exc}); install the extra with `{RAY_INSTALL}`") \
            from exc


class BitsAsCategories(gym.ActionWrapper):
    """A ``MultiBinary(S)`` action space shown as ``MultiDiscrete([2] * S)``.

    RLlib's catalog has an action distribution for ``MultiDiscrete`` (one categorical per
    entry) and none for ``MultiBinary``; the two spaces hold the same 0/1 vectors.
    """

    def __init__(self, env: gym.Env):
        if not isinstance(env.action_space, spaces.MultiBinary):
            raise InvalidArgumentError(f"env must have a MultiBinary action space; got "
                                       f"{env.action_space}")
        super().__init__(env)
        self.action_space = spaces.MultiDiscrete(np.full(env.action_space.shape, 2))

    def action(self, action):
        """The same bits in the wrapped space's dtype (int8)."""
        return np.asarray(action).astype(self.env.action_space.dtype, copy=False)


def make_rllib_env(env_id: str, env_config: Mapping | None = None, *,
                   flatten: bool = True) -> gym.Env:
    """Environment ``env_id`` made from ``env_config`` (its keyword arguments, e.g.
    ``{"model": "digits-cnn-v1", "budget": 0.5}``), in the form RLlib's default models read.

    Args:
        env_id: one of :data:`prune_gym.ENV_IDS`.
        env_config: the environment's arguments; RLlib passes its ``EnvContext`` here (a dict
            with the worker's index as attributes). Copied, never modified.
        flatten: flatten the ``Dict`` observation into one ``Box`` (RLlib's default encoders
            need it); ``False`` for a custom RLModule that reads the ``Dict``.
    """
    env_id = check_choice(env_id, ENV_IDS, "env_id")
    if env_config is None:
        env_config = {}
    if not isinstance(env_config, Mapping) or not all(isinstance(k, str) for k in env_config):
        raise InvalidArgumentError(f"env_config must be a dict of {env_id}'s keyword arguments "
                                   f"(e.g. {{'model': 'digits-cnn-v1'}}); got "
                                   f"{type(env_config).__name__}")
    if not isinstance(flatten, (bool, np.bool_)):
        raise InvalidArgumentError(f"flatten must be True or False; got {flatten!r}")
    env = gym.make(env_id, **dict(env_config))
    try:
        if isinstance(env.action_space, spaces.MultiBinary):
            env = BitsAsCategories(env)
        if flatten:
            if not env.observation_space.is_np_flattenable:
                raise InvalidArgumentError(
                    f"obs_mode={env_config.get('obs_mode')!r} gives observations of no fixed "
                    "size, which cannot be flattened for RLlib's default models; use "
                    "obs_mode='padded' (the default), or flatten=False with a custom RLModule")
            env = FlattenObservation(env)
    except BaseException:
        env.close()
        raise
    return env


def register_rllib_envs(*, flatten: bool = True) -> tuple[str, ...]:
    """Register every environment id with RLlib (``ray.tune.registry.register_env``), under
    its Gymnasium name, made by :func:`make_rllib_env` from RLlib's ``env_config``.

    Call it in the driver before building the algorithm (before or after ``ray.init``):
    Ray hands the creators to its workers. Registering again replaces them.

    Args:
        flatten: as for :func:`make_rllib_env`.

    Returns:
        The registered names (:data:`prune_gym.ENV_IDS`).
    """
    if not isinstance(flatten, (bool, np.bool_)):
        raise InvalidArgumentError(f"flatten must be True or False; got {flatten!r}")
    registry = require_ray("register_rllib_envs", "ray.tune.registry")
    for env_id in ENV_IDS:
        registry.register_env(env_id, functools.partial(make_rllib_env, env_id,
                                                        flatten=bool(flatten)))
    return ENV_IDS
