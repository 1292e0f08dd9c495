"""``agents.train``: the one entry point that the CLI, the benchmarks and users' scripts share.

A run is a directory: ``config.json`` (what was asked, so a resume can check it),
``progress.csv`` and TensorBoard events (SB3's logger), ``episodes.csv`` (one row per
episode, through :class:`prune_gym.wrappers.EpisodeRecorder`), ``best.json`` (the best
feasible keep state so far, with its accuracy), ``checkpoints/`` (the agent and, for
algorithms trained under :class:`~agents.common.vec_env.LagrangianRewardWrapper`, the
multiplier) and ``model.zip`` at the end. An interrupted run (Ctrl-C, a crash after a
checkpoint) continues with ``resume=True``.

Presets name the published setups (:data:`PRESETS`); anything a preset sets can be
overridden by the matching argument.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import prune_gym  # noqa: F401 - registers the environments
from agents.common.callbacks import BestStateCallback, RunCheckpointCallback
from agents.run_dir import RunDirectory, RunDirectoryError
from prune_gym.arguments import check_int
from prune_gym.errors import InvalidArgumentError
from prune_gym.wrappers import EpisodeRecorder

__all__ = ["ALGORITHMS", "ENV_WRAPPERS", "PRESETS", "Preset", "RunDirectoryError",
           "TrainResult", "algorithm", "env_wrapper_fn", "load_agent", "train"]


def _algorithms() -> dict[str, type[BaseAlgorithm]]:
    """Algorithms by name (imported on demand: sb3-contrib and the Lagrangian PPOs)."""
    from sb3_contrib import TQC, MaskablePPO
    from stable_baselines3 import A2C, DDPG, PPO, SAC, TD3

    from agents.amc import AMCDDPG, AMCTD3
    from agents.ppo_lagrangian import MaskablePPOLagrangian, PPOLagrangian
    from agents.recurrent import RecurrentPPO

    return {"ppo": PPO, "a2c": A2C, "sac": SAC, "td3": TD3, "ddpg": DDPG, "tqc": TQC,
            "maskable_ppo": MaskablePPO, "recurrent_ppo": RecurrentPPO,
            "ppo_lagrangian": PPOLagrangian, "maskable_ppo_lagrangian": MaskablePPOLagrangian,
            "amc_ddpg": AMCDDPG, "amc_td3": AMCTD3}


ALGORITHMS = ("ppo", "a2c", "sac", "td3", "ddpg", "tqc", "maskable_ppo", "recurrent_ppo",
              "ppo_lagrangian", "maskable_ppo_lagrangian", "amc_ddpg", "amc_td3")
LAGRANGIAN_ALGORITHMS = ("ppo_lagrangian", "maskable_ppo_lagrangian")


def algorithm(name: str | type[BaseAlgorithm]) -> type[BaseAlgorithm]:
    """The algorithm class for a name in :data:`ALGORITHMS` (a class passes through)."""
    if isinstance(name, type) and issubclass(name, BaseAlgorithm):
        return name
    table = _algorithms()
    if name not in table:
        raise InvalidArgumentError(f"algo={name!r} is not a known algorithm; choose one of "
                                   f"{', '.join(ALGORITHMS)} (or pass an SB3 algorithm class)")
    return table[name]


@dataclass(frozen=True)
class Preset:
    """A published setup: environment, algorithm, policy and their hyper-parameters."""

    env_id: str
    algo: str
    policy: str
    description: str
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 1
    env_wrapper: str | None = None  # a name in ENV_WRAPPERS, applied to every env


def _env_wrappers() -> dict[str, Callable[[gym.Env], gym.Env]]:
    """Environment wrappers by name (imported on demand)."""
    from agents.amc import wrap_amc

    return {"amc": wrap_amc}


ENV_WRAPPERS = ("amc",)


def env_wrapper_fn(name: str | Callable[[gym.Env], gym.Env]) -> Callable[[gym.Env], gym.Env]:
    """The wrapper for a name in :data:`ENV_WRAPPERS` (a callable passes through)."""
    if callable(name):
        return name
    table = _env_wrappers()
    if not isinstance(name, str) or name not in table:
        raise InvalidArgumentError(f"env_wrapper={name!r} is not a known wrapper; choose one "
                                   f"of {', '.join(ENV_WRAPPERS)} (or pass a callable "
                                   "fn(env) -> env)")
    return table[name]


def _extractor(name: str):
    from agents.common import torch_layers

    return getattr(torch_layers, name)


# Every constrained preset drives its multiplier with the signed margin (metric / limit - 1)
# against a limit of 0, so that lambda falls again when the agent prunes far past the budget.
_SIGNED = {"cost_key": "signed_cost", "cost_limit": 0.0}
# Where the paper gives no multiplier (GNN-RL has none, Balemans et al. publish none), ours:
# a PID controller whose P term reads the last rollout's margin unsmoothed (no EMA), with the
# cost advantage standardised like the reward's. With OmniSafe's defaults (Adam lr 0.035, or
# PID with a 0.95 EMA) lambda moves far slower than PPO's Gaussian saturates at "keep every
# channel", after which a centred cost advantage is exactly 0 and no lambda helps; this
# setting keeps lambda in a band and the final states around the budget
# (benchmarks/results/lagrangian.md).
_SETTLING = {**_SIGNED, "lagrangian": "pid", "normalize_cost_advantage": True,
             "lagrangian_kwargs": {"kp": 2.0, "ki": 0.1, "kd": 0.0, "ema": 0.0}}

# AMC's published settings (see the "amc" preset and agents/amc, where each is cited)
_AMC = {"learning_rate": 1e-4, "critic_learning_rate": 1e-3, "tau": 0.01, "gamma": 1.0,
        "batch_size": 64, "warmup_episodes": 100, "memory_per_layer": 100, "init_delta": 0.5,
        "delta_decay": 0.95, "moving_alpha": 0.5}

#: The published setups by name: a :class:`Preset` each (environment, algorithm, policy and
#: cited hyper-parameters), used as ``train(preset=name)``.
PRESETS: dict[str, Preset] = {
    # GNN-RL (Yu et al., ICML 2022; yusx-swapp/GNN-RL-Model-Compression, parameter.py and
    # lib/RL/agent.py): m-GNN encoder, PPO with clip 0.2, 10 epochs per update (the code's
    # K_epochs; the paper says 20), Adam 3e-4, gamma 0.99, entropy 0.01, Monte Carlo returns
    # (gae_lambda 1), an update every 100 steps, 5 steps per episode, Gaussian std 0.5 (fixed
    # there; learned from log(0.5) here). Our choices: PPO-Lagrangian on the signed cost in
    # place of the code's -100 on failure, and minibatches of 50.
    "gnnrl": Preset(
        "DNNGraph-v0", "ppo_lagrangian", "MultiInputPolicy",
        "GNN-RL: m-GNN + PPO on DNNGraph-v0 (whole-network ratios, 5 steps)",
        policy_kwargs={"features_extractor": "MultiStageGNNExtractor",
                       "net_arch": {"pi": [200], "vf": [200]}, "log_std_init": math.log(0.5)},
        algo_kwargs={"n_steps": 100, "batch_size": 50, "n_epochs": 10, "learning_rate": 3e-4,
                     "gamma": 0.99, "gae_lambda": 1.0, "clip_range": 0.2, "ent_coef": 0.01,
                     "vf_coef": 0.5, **_SETTLING},
        env_kwargs={"max_steps": 5}),
    # Balemans et al. 2025 (arXiv 2509.10526): a GAT over the layer graph, binary per-channel
    # actions, a CMDP with a compression constraint and a self-competition reward. The
    # abstract gives no hyper-parameters: SB3's PPO defaults (lr 3e-4, clip 0.2, gamma 0.99,
    # GAE 0.95) with rollouts of 256 steps and minibatches of 64 are our choice.
    "balemans": Preset(
        "ChannelMask-v0", "maskable_ppo_lagrangian", "MultiInputPolicy",
        "Balemans et al.: GAT + MaskablePPO-Lagrangian on ChannelMask-v0, self-competition",
        policy_kwargs={"features_extractor": "GATExtractor"},
        algo_kwargs={"n_steps": 256, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4,
                     **_SETTLING},
        env_kwargs={"reward": "self_competition"}),
    # Malik et al. (MuhammadUmairHaider/Neural-Network-Pruning-Through-Constrained-
    # Reinforcement-Learning, e328ede): PPO-Lagrangian with separate [32, 32] MLPs, n_steps
    # 128 on 2 envs, batch 64, 10 epochs, lr 3e-4, clip 0.2, target_kl 0.1, GAE 0.95, cost
    # GAE 1.0, gradient norm 0.5; their dual nu = softplus(theta) starts at 1 and is stepped
    # by Adam with lr 1 on the mean cost, the cost advantage only centred. Here: the same
    # gradient rule on lambda itself (projected at 0), Adam lr 1, lambda0 1, A_c centred.
    "malik": Preset(
        "LayerRatio-v0", "ppo_lagrangian", "MultiInputPolicy",
        "Malik et al.: PPO-Lagrangian with small MLPs on LayerRatio-v0",
        policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [32, 32]}},
        algo_kwargs={"n_steps": 128, "batch_size": 64, "n_epochs": 10, "learning_rate": 3e-4,
                     "clip_range": 0.2, "target_kl": 0.1, "gae_lambda": 0.95,
                     "cost_gae_lambda": 1.0, "max_grad_norm": 0.5, **_SIGNED,
                     "lagrangian": "gradient",
                     "lagrangian_kwargs": {"lambda_init": 1.0, "lr": 1.0}},
        n_envs=2),
    # AMC (He et al., ECCV 2018; mit-han-lab/amc, amc_search.py and lib/agent.py; every value
    # is cited in agents/amc): DDPG with 300-300 actor and critic, lr 1e-4 (actor) and 1e-3
    # (critic), tau 0.01, discount 1, batches of 64, 100 transitions of memory per layer,
    # 100 warm-up episodes of uniform actions, then a truncated normal around the actor's
    # action (sigma 0.5, x0.95 per episode); the final reward -(1 - accuracy) on every
    # transition minus a moving-average baseline (0.5); one update per transition after each
    # episode. AMC's state, its preserve-ratio action in [0, 1] (at least 1 - max_ratio = 0.2
    # kept, AMC's lbound) and its reward come from the "amc" env wrapper; the action wall is
    # constraint_mode="project". The code searches 800 episodes (800 x groups timesteps).
    "amc": Preset(
        "LayerRatio-v0", "amc_ddpg", "MlpPolicy",
        "AMC: DDPG on LayerRatio-v0 with the action wall, AMC's state and error reward",
        policy_kwargs={"net_arch": [300, 300]},
        algo_kwargs=dict(_AMC),
        env_kwargs={"constraint_mode": "project", "max_ratio": 0.8}, env_wrapper="amc"),
    # The same setup on TD3 (twin critics, delayed actor, target smoothing: SB3's defaults).
    "amc-td3": Preset(
        "LayerRatio-v0", "amc_td3", "MlpPolicy",
        "AMC's setup on TD3 instead of DDPG",
        policy_kwargs={"net_arch": [300, 300]},
        algo_kwargs=dict(_AMC),
        env_kwargs={"constraint_mode": "project", "max_ratio": 0.8}, env_wrapper="amc"),
}


@dataclass
class TrainResult:
    """What a finished (or resumed and finished) run left behind."""

    run_dir: Path | None
    model: BaseAlgorithm
    env: VecEnv
    best: dict[str, Any] | None
    config: dict[str, Any]


def _plain(value: Any) -> Any:
    """A JSON-able description of an argument (models and callables by their type name)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _env_factory(env_id: str, env_kwargs: dict, seed: int, rank: int,
                 record: Path | None, wrapper: Callable[[gym.Env], gym.Env] | None = None
                 ) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        import prune_gym  # noqa: F401 - registers the ids in a worker process

        env = gym.make(env_id, **{**env_kwargs, "seed": seed + rank})
        if wrapper is not None:
            env = wrapper(env)
        if record is not None:
            name = "episodes.csv" if rank == 0 else f"episodes-{rank}.csv"
            env = EpisodeRecorder(env, record / name)
        return Monitor(env)
    return make


def load_agent(path: str | Path, env: gym.Env | VecEnv, algo: str | type[BaseAlgorithm],
               **kwargs) -> BaseAlgorithm:
    """Load a saved agent onto ``env``, naming the space that differs if it does not fit."""
    cls = algorithm(algo)
    try:
        return cls.load(path, env=env, **kwargs)
    except ValueError as exc:
        text = str(exc)
        if "spaces do not match" in text:
            which = "observation_space" if "Observation" in text else "action_space"
            raise InvalidArgumentError(
                f"the checkpoint {str(path)!r} was trained on another {which} than env's "
                f"({text}); load it into an env built with the same network sizes (max_nodes, "
                "max_edges, max_groups, max_channels) and options") from exc
        raise


def _resolve(env_id, algo, preset, policy, policy_kwargs, algo_kwargs, env_kwargs, n_envs,
             wrapper=None):
    if preset is not None:
        if preset not in PRESETS:
            raise InvalidArgumentError(f"preset={preset!r} is not known; choose one of "
                                       f"{', '.join(PRESETS)}")
        p = PRESETS[preset]
        if env_id is not None and env_id != p.env_id:
            raise InvalidArgumentError(f"preset={preset!r} runs on {p.env_id}, not "
                                       f"env_id={env_id!r}; drop env_id or the preset")
        env_id, algo = p.env_id, algo or p.algo
        policy = policy or p.policy
        policy_kwargs = {**p.policy_kwargs, **(policy_kwargs or {})}
        algo_kwargs = {**p.algo_kwargs, **(algo_kwargs or {})}
        env_kwargs = {**p.env_kwargs, **(env_kwargs or {})}
        n_envs = n_envs or p.n_envs
        wrapper = wrapper if wrapper is not None else p.env_wrapper
    if env_id not in prune_gym.ENV_IDS:
        raise InvalidArgumentError(f"env_id={env_id!r} is not a prune-gym environment; choose "
                                   f"one of {', '.join(prune_gym.ENV_IDS)} (or a preset)")
    if algo is None:
        raise InvalidArgumentError(f"algo is required without a preset; choose one of "
                                   f"{', '.join(ALGORITHMS)}")
    return (env_id, algo, policy or "MultiInputPolicy", dict(policy_kwargs or {}),
            dict(algo_kwargs or {}), dict(env_kwargs or {}), n_envs or 1, wrapper)


def train(env_id: str | None = None, algo: str | type[BaseAlgorithm] | None = None, *,
          preset: str | None = None, total_timesteps: int = 2048,
          env_kwargs: dict | None = None, algo_kwargs: dict | None = None,
          policy: str | type | None = None, policy_kwargs: dict | None = None, seed: int = 0,
          n_envs: int | None = None, vec_env: str = "dummy", run_dir: str | Path | None = None,
          checkpoint_every: int | None = None, resume: bool = False,
          lagrangian_wrapper: dict | None = None, env_wrapper: str | Callable | None = None,
          callback=None, progress_bar: bool = False, device: str = "cpu",
          verbose: int = 0) -> TrainResult:
    """Train an agent on a prune-gym environment, leaving a run directory.

    Args:
        env_id: one of ``prune_gym.ENV_IDS`` (or given by ``preset``).
        algo: a name in :data:`ALGORITHMS` or an SB3 algorithm class.
        preset: a name in :data:`PRESETS` (``gnnrl``, ``balemans``, ``malik``, ``amc``,
            ``amc-td3``).
        total_timesteps: environment steps in all (a resume trains up to this total).
        env_kwargs: passed to ``gym.make`` (``model=``, ``budget=``, ...; default the
            embedded digits task).
        algo_kwargs, policy, policy_kwargs: for the algorithm. ``policy_kwargs`` may name a
            ``features_extractor`` (``"GATExtractor"``, ``"MultiStageGNNExtractor"``) with its
            ``features_extractor_kwargs``.
        seed: seeds the algorithm and the environments (worker ``i`` gets ``seed + i``).
        n_envs, vec_env: number of environments and ``"dummy"`` or ``"subproc"``.
        run_dir: the run directory (None: nothing written).
        checkpoint_every: timesteps between checkpoints (default: only at the end and on
            interruption).
        resume: continue the run in ``run_dir`` from its last checkpoint.
        lagrangian_wrapper: for algorithms without a built-in multiplier, train on
            ``r - lambda * c`` through :class:`~agents.common.vec_env.LagrangianRewardWrapper`
            with these arguments (e.g. ``{"cost_key": "signed_cost", "cost_limit": 0.0}``).
        env_wrapper: a name in :data:`ENV_WRAPPERS` (``"amc"``: AMC's state, action and
            reward) or a callable ``fn(env) -> env``, applied to every environment right
            after ``gym.make`` (default: the preset's, if any).
        callback: an SB3 callback (or list) run after the run's own.
        progress_bar: SB3's progress bar.

    Raises:
        InvalidArgumentError: unknown names, or a checkpoint whose spaces differ from the env's.
        RunDirectoryError: ``run_dir`` holds another run (or any run, without ``resume``).
    """
    check_int(n_envs, "n_envs", minimum=1, optional=True, meaning="environments")
    check_int(seed, "seed", meaning="the run's seed")
    env_id, algo_name, policy, policy_kwargs, algo_kwargs, env_kwargs, n_envs, wrapper_name = \
        _resolve(env_id, algo, preset, policy, policy_kwargs, algo_kwargs, env_kwargs, n_envs,
                 env_wrapper)
    wrap = env_wrapper_fn(wrapper_name) if wrapper_name is not None else None
    cls = algorithm(algo_name)
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) \
            or total_timesteps < 1:
        raise InvalidArgumentError(f"total_timesteps must be a positive integer; got "
                                   f"{total_timesteps!r}")
    if vec_env not in ("dummy", "subproc"):
        raise InvalidArgumentError(f"vec_env={vec_env!r}; choose 'dummy' or 'subproc'")
    if lagrangian_wrapper is not None and algo_name in LAGRANGIAN_ALGORITHMS:
        raise InvalidArgumentError(f"algo={algo_name!r} has its own multiplier; "
                                   "lagrangian_wrapper is for the other algorithms")
    extractor = policy_kwargs.pop("features_extractor", None)
    if isinstance(extractor, str):
        policy_kwargs["features_extractor_class"] = _extractor(extractor)
    elif extractor is not None:
        policy_kwargs["features_extractor_class"] = extractor
    config = {
        "env_id": env_id, "algo": algo_name if isinstance(algo_name, str) else _plain(cls),
        "preset": preset, "policy": _plain(policy), "policy_kwargs": _plain(policy_kwargs),
        "algo_kwargs": _plain(algo_kwargs), "env_kwargs": _plain(env_kwargs),
        "total_timesteps": total_timesteps, "seed": seed, "n_envs": n_envs, "vec_env": vec_env,
        "lagrangian_wrapper": _plain(lagrangian_wrapper),
        "env_wrapper": wrapper_name if wrap is None or isinstance(wrapper_name, str)
        else f"{getattr(wrap, '__module__', '?')}.{getattr(wrap, '__qualname__', repr(wrap))}",
        "versions": {"prune_gym": prune_gym.__version__,
                     "stable_baselines3": stable_baselines3.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
    }
    path = Path(run_dir) if run_dir is not None else None
    run = None
    checkpoint = None
    if path is not None:
        run = RunDirectory(path, "config.json").open(
            config, resume=resume, keys=("env_id", "algo", "preset", "policy"))
        found = path / "checkpoints" / "latest.zip"
        checkpoint = found if resume and found.is_file() else None

    factories = [_env_factory(env_id, env_kwargs, seed, i, path, wrap) for i in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(factories) if vec_env == "subproc" else DummyVecEnv(factories)
    wrapper = None
    if lagrangian_wrapper is not None:
        from agents.common.vec_env import LagrangianRewardWrapper

        saved = path / "checkpoints" / "lagrangian.json" if path is not None else None
        if checkpoint is not None and saved is not None and saved.is_file():
            wrapper = LagrangianRewardWrapper.load(saved, venv)
        else:
            wrapper = LagrangianRewardWrapper(venv, **lagrangian_wrapper)
        venv = wrapper
    try:
        if checkpoint is not None:
            model = load_agent(checkpoint, venv, cls, device=device)
        else:
            model = cls(policy, venv, policy_kwargs=policy_kwargs or None, seed=seed,
                        device=device, verbose=verbose, **algo_kwargs)
        best = BestStateCallback(run)
        callbacks, saver = [best], None
        if path is not None:
            model.set_logger(configure(str(path), ["csv", "tensorboard"]
                                       + (["stdout"] if verbose else [])))
            saver = RunCheckpointCallback(path, checkpoint_every or math.inf, wrapper)
            callbacks.append(saver)
        if callback is not None:
            callbacks.extend(callback if isinstance(callback, list) else [callback])
        remaining = total_timesteps - model.num_timesteps
        try:
            if remaining > 0:
                model.learn(remaining, callback=CallbackList(callbacks),
                            reset_num_timesteps=checkpoint is None, progress_bar=progress_bar)
        except KeyboardInterrupt:
            if saver is not None:
                saver.save()
            raise
        if saver is not None:
            saver.save()
            model.save(path / "model.zip")
    except BaseException:
        venv.close()
        raise
    return TrainResult(path, model, venv, best.best, config)

