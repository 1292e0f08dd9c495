"""Shared constrained-MDP machinery of the three pruning environments.

The environments differ only in what an action means (a ratio for one group, ratios for
all groups, channel bits for one group). Everything else is common and lives here: turning
constructor arguments into an engine (:mod:`prune_gym.envs.problem`), pricing a keep state
in closed form, the cost signal, end-of-episode evaluation and reward, observations,
``info``, input checks, rendering and export. A step therefore costs a closed-form price
and an observation encoding; when an episode ends, one evaluation of the final state
(the Evaluator runs it on the physically pruned network, or the masked one where the cost
model predicts that is cheaper, and caches it by keep state; with ``finetune_steps`` a
pruned copy is fine-tuned first). Nothing is re-traced.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.arguments import check_callable, check_choice, check_int, check_number
from prune_gym.budget import as_budget
from prune_gym.envs.finetune import FineTuner
from prune_gym.envs.problem import DEFAULT_BUDGET, DEFAULT_TASK, build_problem
from prune_gym.errors import EnvStateError, InvalidArgumentError
from prune_gym.importance import check_criterion
from prune_gym.observations import ObservationEncoder
from prune_gym.parallel import check_vector_env
from prune_gym.rewards import make_reward

CONSTRAINT_MODES = ("cmdp", "project")
OBS_MODES = ("padded", "graph")


class PruneEnv(gym.Env):
    """Base class: a pruning episode over a :class:`~prune_gym.network.PrunableNetwork`.

    Subclasses define the action space and :meth:`_apply`; see the concrete environments
    for the documented arguments, all of which this constructor takes.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}
    env_id = ""
    rounds_counts = True  # whether the actions set counts that ``round_to`` can round (the
    # one flag: agents.methods reads it for every method that trains on this env)

    def __init__(self, model=DEFAULT_TASK, *, val_data=None, example_inputs=None,
                 budget: float | None = None, constraint: str = "macs",
                 constraint_mode: str = "cmdp", reward: str = "accuracy",
                 importance: str = "l1", train_data=None, eval_samples: int | None = None,
                 eval_batch_size: int = 500, bn_recalibration: int | None = None,
                 finetune_steps: int = 0, finetune_lr: float = 0.01,
                 finetune_batch_size: int = 64, evaluate=None, eval_cache: int = 4096,
                 obs_mode: str = "padded", max_nodes: int | None = None,
                 max_edges: int | None = None, max_groups: int | None = None,
                 round_to: int | None = None, latency_model=None,
                 render_mode: str | None = None, seed: int | None = None):
        check_vector_env()  # refuse a vector env too big for the machine before it starts
        self.constraint_mode = check_choice(constraint_mode, CONSTRAINT_MODES, "constraint_mode")
        self.obs_mode = check_choice(obs_mode, OBS_MODES, "obs_mode")
        if render_mode is not None:
            check_choice(render_mode, tuple(self.metadata["render_modes"]), "render_mode")
        self.render_mode = render_mode
        self.importance = check_criterion(importance)
        self._reward = make_reward(reward)
        self._seed = check_int(seed, "seed", optional=True)
        # the budget is checked once, before anything is built (the task's default, when
        # budget=None, is checked again as the fraction it is)
        spec = as_budget(DEFAULT_BUDGET if budget is None else budget, constraint, round_to,
                         latency_model)
        # every count and rate is checked here, under the name the user typed, before any
        # of them is used or handed on (the Evaluator calls eval_samples "max_samples")
        finetune_steps = check_int(finetune_steps, "finetune_steps")
        finetune_batch_size = check_int(finetune_batch_size, "finetune_batch_size", minimum=1)
        finetune_lr = check_number(finetune_lr, "finetune_lr", low=0.0,
                                   meaning="the fine-tuning learning rate")
        eval_cache = check_int(eval_cache, "eval_cache", meaning="keep states remembered")
        eval_samples = check_int(eval_samples, "eval_samples", minimum=1, optional=True)
        eval_batch_size = check_int(eval_batch_size, "eval_batch_size", minimum=1)
        bn_recalibration = check_int(bn_recalibration, "bn_recalibration", optional=True,
                                     meaning="batches of training data")
        check_callable(evaluate, "evaluate", "fn(model) -> float")
        problem = build_problem(
            model, val_data=val_data, example_inputs=example_inputs,
            importance=self.importance, train_data=train_data, eval_samples=eval_samples,
            eval_batch_size=eval_batch_size, bn_recalibration=bn_recalibration,
            evaluate=evaluate, eval_cache=eval_cache,
            calibration_batch=finetune_batch_size, seed=self._seed or 0)
        self.net = problem.net
        self.evaluator = problem.evaluator
        self.task = problem.task
        if budget is None and problem.task_budget is not None:
            spec = spec.with_fraction(problem.task_budget)
        #: the budget bound to this env's network: limit, floor, feasibility, rounding
        self.bound = spec.bind(self.net, importance=self.importance, who=self.env_id,
                               rounds=self.rounds_counts, check=False)
        self.budget, self.constraint, self.round_to = spec.fraction, spec.constraint, \
            spec.round_to
        self._finetune = None
        if finetune_steps:
            if problem.train is None:
                raise InvalidArgumentError("finetune_steps > 0 needs train_data (or a task "
                                           "name as model=) to fine-tune on")
            self._finetune = FineTuner(problem.train, finetune_steps, finetune_lr,
                                       finetune_batch_size, self._seed or 0)
        self.sizes = np.array([g.size for g in self.net.groups], dtype=np.int64)
        self.num_groups = len(self.sizes)
        self.bound.check_reachable(self._floor_counts(), f"the minimum {self.env_id} allows")
        self.encoder = ObservationEncoder(self.net, mode=self.obs_mode,
                                          extra_spaces=self._extra_spaces() or None,
                                          max_nodes=max_nodes, max_edges=max_edges,
                                          max_groups=max_groups, importance=self.importance)
        self.max_nodes, self.max_edges = self.encoder.max_nodes, self.encoder.max_edges
        self.max_groups = self.encoder.max_groups  # the action space may read it
        self.observation_space = self.encoder.space
        self.action_space = self._make_action_space()
        self._started = False
        self._done = True
        self._t = 0
        self._state: dict[str, Any] = {}
        self._last_eval: dict[str, float] = {}

    # -- subclass hooks ---------------------------------------------------------------------
    def _make_action_space(self) -> gym.spaces.Space:
        raise NotImplementedError

    def _floor_counts(self) -> np.ndarray:
        """Smallest keep count per group that this environment's actions can reach."""
        return np.ones(self.num_groups, dtype=np.int64)

    def _start(self) -> None:
        """Put the keep state back to the full network."""
        raise NotImplementedError

    def _counts(self) -> np.ndarray:
        """Channels kept per group now."""
        raise NotImplementedError

    def _keep_arg(self):
        """The keep state as the engine takes it (counts, or masks)."""
        return self._counts().tolist()

    def _apply(self, action: np.ndarray) -> tuple[bool, bool]:
        """Apply a checked action; return ``(terminated, truncated)``."""
        raise NotImplementedError

    def _validate(self, action: np.ndarray) -> np.ndarray:
        """Check an action's values (shape and dtype are checked already)."""
        return action

    def _current_group(self) -> int:
        return -1

    def _step_fraction(self) -> float:
        raise NotImplementedError

    def _extra_spaces(self) -> dict[str, gym.spaces.Box]:
        return {}

    def _extras(self) -> dict[str, np.ndarray] | None:
        return None

    # -- pricing and the constraint ---------------------------------------------------------
    def _fits(self, keep) -> bool:
        return self.bound.feasible(keep)

    def _price(self) -> None:
        """Price the current state once; observation, info and render read the result."""
        keep = self._keep_arg()
        macs, params = self.net.price(keep, self.importance)
        metric = {"macs": macs, "params": params}.get(self.constraint)
        if metric is None:
            metric = self.bound.metric(keep)
        self._state = {
            "macs": int(macs), "params": int(params),
            "macs_ratio": macs / self.net.base_macs,
            "params_ratio": params / self.net.base_params,
            "ratio": self.bound.ratio(metric),
            "feasible": self.bound.fits(metric),
            # (metric - limit) is exactly > 0 whenever the constraint is violated
            "margin": self.bound.margin(metric),
        }
        self._state["violation"] = max(0.0, self._state["margin"])

    # -- observation, info ------------------------------------------------------------------
    def _observation(self):
        ratio = self._state["ratio"]
        # remaining budget: what may still be spent, negative while over budget
        globals_ = np.array([self.budget, self.budget - min(1.0, ratio), self._step_fraction(),
                             min(1.0, ratio)], dtype=np.float32)  # NUM_GLOBAL_FEATURES
        return self.encoder.encode(self._counts(), current_group=self._current_group(),
                                   global_features=globals_, extras=self._extras())

    def _info(self, final: bool) -> dict[str, Any]:
        s = self._state
        info = {
            "cost": s["violation"] if final else 0.0,
            # signed: negative when the episode ends under budget, so that a Lagrange
            # multiplier driven by it falls again once the agent over-prunes
            "signed_cost": s["margin"] if final else 0.0,
            "violation": s["violation"],
            "feasible": s["feasible"],
            "macs": s["macs"], "params": s["params"],
            "macs_ratio": s["macs_ratio"], "params_ratio": s["params_ratio"],
            "keep": self.keep,
            "step": self._t,
            "evaluations": self.evaluator.evaluations,
        }
        if self.constraint == "latency":  # predicted, a fraction of the original's
            info["latency_ratio"] = s["ratio"]
        if final:
            info.update(self._last_eval)
            # the exact state (ChannelMask's kept indices, not just counts), so that a run
            # can export or replay the best state it saw without stepping the env again
            info["keep_state"] = self.keep_state()
        return info

    # -- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode from the unpruned network.

        Options:
            reset_reward: clear the self-competition record.
        """
        if seed is None and not self._started and self._seed is not None:
            seed = self._seed
        super().reset(seed=seed)
        if options and options.get("reset_reward"):
            self._reward.reset_state()
        self._start()
        self._t = 0
        self._started = True
        self._done = False
        self._last_eval = {}
        self._price()
        return self._observation(), self._info(final=False)

    def _check_action(self, action) -> np.ndarray:
        if not self._started:
            raise EnvStateError(f"{self.env_id}: step() called before reset(); call "
                                "env.reset() first")
        if self._done:
            raise EnvStateError(f"{self.env_id}: step() called after the episode ended "
                                "(terminated or truncated); call env.reset() first")
        try:
            arr = np.asarray(action)
        except Exception as exc:  # noqa: BLE001 - ragged lists and the like
            raise InvalidArgumentError(f"action cannot be read as an array ({exc})") from exc
        if arr.dtype.kind not in "biuf":
            raise InvalidArgumentError(f"action has dtype {arr.dtype}; {self.env_id} expects "
                                       f"numbers for {self.action_space}")
        if arr.shape != self.action_space.shape:
            raise InvalidArgumentError(f"action has shape {arr.shape}; {self.env_id} expects "
                                       f"shape {self.action_space.shape} ({self.action_space})")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InvalidArgumentError(f"action contains NaN or inf: {arr.tolist()}")
        return self._validate(arr)

    def step(self, action):
        """Apply one action; evaluate and pay reward and cost when the episode ends."""
        arr = self._check_action(action)
        terminated, truncated = self._apply(arr)
        self._t += 1
        self._price()
        final = terminated or truncated
        reward = 0.0
        if final:
            self._done = True
            reward = self._finish()
        return self._observation(), reward, terminated, truncated, self._info(final)

    def _evaluate(self, keep, importance: str | None = None):
        importance = importance or self.importance
        if self._finetune is not None:
            return self._finetune.evaluate(self.net, self.evaluator, keep, importance)
        return self.evaluator.evaluate_keep(self.net, keep, importance)

    def evaluate_state(self, keep, importance: str | None = None) -> float:
        """Accuracy of any keep state, evaluated exactly as an episode's end is (cached)."""
        return float(self._evaluate(keep, importance).accuracy)

    def _finish(self) -> float:
        """Evaluate the final state once and score it."""
        result = self._evaluate(self._keep_arg())
        self._last_eval = {"accuracy": float(result.accuracy)}
        if not np.isnan(result.loss):
            self._last_eval["loss"] = float(result.loss)
        return float(self._reward(result.accuracy, self._state["macs"],
                                  self._state["feasible"]))

    def render(self) -> str | None:
        """``"ansi"``: a per-group table of the current state (None without a render mode)."""
        if self.render_mode != "ansi":
            return None
        if not self._state:
            return f"{self.env_id}: not reset yet"
        s, counts, cur = self._state, self._counts(), self._current_group()
        lines = [f"{self.env_id}  step {self._t}  {self.constraint} budget {self.budget:.3f}  "
                 f"macs {s['macs_ratio']:.3f}  params {s['params_ratio']:.3f}  "
                 f"{'feasible' if s['feasible'] else 'INFEASIBLE'}",
                 f"   {'#':>3}  {'group':<28} {'size':>5} {'kept':>5} {'kept%':>6}"]
        for i, g in enumerate(self.net.groups):
            mark = ">" if i == cur else " "
            lines.append(f"{mark}  {i:>3}  {g.name[:28]:<28} {g.size:>5} {counts[i]:>5} "
                         f"{100 * counts[i] / g.size:>5.1f}%")
        if "accuracy" in self._last_eval:
            lines.append(f"accuracy {self._last_eval['accuracy']:.4f}")
        return "\n".join(lines) + "\n"

    def export(self):
        """The physically pruned ``nn.Module`` of the current state (a new model, in eval mode).

        Its BatchNorm statistics are re-estimated exactly as the environment's evaluation
        does when ``bn_recalibration`` > 0, so the model scores what ``info["accuracy"]``
        reported (without ``finetune_steps``: the short fine-tune is an evaluation device,
        and a deployed model gets a proper one).
        """
        if not self._started:
            raise EnvStateError(f"{self.env_id}: export() needs a state; call reset() first")
        model = self.net.export(self._keep_arg(), self.importance)
        if self.evaluator.bn_recalibration:
            self.evaluator.recalibrate(model)
        return model.eval()

    @property
    def keep(self) -> list[int]:
        """Channels kept per group now."""
        return [int(k) for k in self._counts()]

    def keep_state(self) -> list:
        """The current keep state exactly as the engine takes it, in plain Python: counts
        (the ratio environments, channels chosen by ``importance``) or, for ChannelMask,
        the kept channel indices of each group. ``net.macs(env.keep_state(),
        env.importance)`` re-prices it."""
        keep = self._keep_arg()
        return [np.flatnonzero(k).tolist() if isinstance(k, np.ndarray) and k.dtype == bool
                else int(k) for k in keep]
