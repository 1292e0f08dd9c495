"""Vector environments with the settings a user types: no hang, one torch thread per worker.

Everything that starts worker processes runs in a child Python under a time limit, so a
hang fails the test instead of stalling the run (pytest-timeout is not installed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

import prune_gym
from prune_gym import parallel
from prune_gym.errors import InvalidArgumentError

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 240


def run_script(code: str, folder: Path, *, threads_env: bool = True,
               limit: int = LIMIT_S) -> dict:
    """Run ``code`` as a script file (spawned workers re-import it as their main module,
    as they do a user's training script) in a fresh Python under a time limit; it prints
    one JSON line last."""
    script = folder / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not threads_env:  # let torch pick its default (every core), as a user's shell does
        env.pop("OMP_NUM_THREADS", None)
        env.pop("MKL_NUM_THREADS", None)
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the vector env hung: no result within {limit} s\n{exc.stderr or ''}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_async_make_vec_with_defaults_after_torch_ran(tmp_path) -> None:
    """``gym.make_vec(id, num_envs=2, vectorization_mode="async")`` as typed (fork on
    Linux), after torch has used its thread pool in the parent: whole episodes, every env."""
    result = run_script("""
        import json
        import gymnasium as gym
        import numpy as np
        import torch
        import prune_gym

        torch.set_num_threads(2)
        torch.randn(512, 512) @ torch.randn(512, 512)  # the parent's OpenMP pool is running
        out = {}
        for env_id in prune_gym.ENV_IDS:
            envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="async")
            try:
                envs.reset(seed=0)
                envs.action_space.seed(0)
                done, steps, accuracy = np.zeros(2, bool), 0, [None, None]
                while not done.all() and steps < 100:
                    _, rewards, term, trunc, infos = envs.step(envs.action_space.sample())
                    for i in np.flatnonzero((term | trunc) & ~done):
                        if infos.get("_accuracy", np.zeros(2, bool))[i]:
                            accuracy[i] = float(infos["accuracy"][i])
                    done |= term | trunc
                    steps += 1
                out[env_id] = {"done": bool(done.all()), "accuracy": accuracy}
            finally:
                envs.close()
        print(json.dumps(out))
    """, tmp_path)
    assert sorted(result) == sorted(prune_gym.ENV_IDS)
    for env_id, r in result.items():
        assert r["done"], env_id
        # each worker evaluated its final state (the digits net scores 0.1 at chance)
        assert all(a is not None and 0.05 < a <= 1.0 for a in r["accuracy"]), (env_id, r)


def test_workers_use_one_thread_while_the_main_process_uses_every_core(tmp_path) -> None:
    result = run_script("""
        import json
        import torch

        default = torch.get_num_threads()  # before prune_gym is imported
        import gymnasium as gym
        from stable_baselines3.common.vec_env import SubprocVecEnv
        import prune_gym  # a spawned worker imports it while re-importing this script


        class Threads(gym.Wrapper):
            def torch_threads(self):
                return torch.get_num_threads()


        def make():
            return Threads(gym.make("LayerRatio-v0"))


        if __name__ == "__main__":
            main = torch.get_num_threads()
            torch.randn(512, 512) @ torch.randn(512, 512)
            envs = gym.make_vec("LayerRatio-v0", num_envs=2, vectorization_mode="async",
                                wrappers=[Threads])
            try:
                gym_workers = list(envs.call("torch_threads"))
            finally:
                envs.close()
            venv = SubprocVecEnv([make, make])  # SB3's default start method (forkserver)
            try:
                sb3_workers = venv.env_method("torch_threads")
            finally:
                venv.close()
            print(json.dumps({"default": default, "main": main,
                              "after": torch.get_num_threads(),
                              "gym": gym_workers, "sb3": sb3_workers}))
    """, tmp_path, threads_env=False)
    assert result["default"] == result["main"] == result["after"]  # the main process: all
    assert result["gym"] == [1, 1] and result["sb3"] == [1, 1]


@pytest.fixture
def alarm():
    """Fail instead of hanging if a refused vector env started its workers after all."""
    def on_alarm(signum, frame):
        raise TimeoutError("vector env construction did not return within 120 s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_more_workers_than_the_machine_holds_is_refused_before_any_start(alarm, monkeypatch,
                                                                           net, task) -> None:
    import multiprocessing

    monkeypatch.setenv(parallel.MAX_WORKERS_VAR, "2")
    with pytest.raises(InvalidArgumentError, match=r"num_envs=3 worker processes .* at most 2"):
        gym.make_vec("DNNGraph-v0", num_envs=3, vectorization_mode="async",
                     model=net, val_data=task.val_data)
    assert multiprocessing.active_children() == []
    # sync vector envs start no processes: no limit
    envs = gym.make_vec("DNNGraph-v0", num_envs=3, vectorization_mode="sync", model=net,
                        val_data=task.val_data)
    envs.close()


def test_worker_limit_rule_and_bad_settings(monkeypatch) -> None:
    monkeypatch.delenv(parallel.MAX_WORKERS_VAR, raising=False)
    limit = parallel.WORKERS_PER_CORE * parallel.usable_cores()
    assert parallel.max_workers() == limit
    parallel.check_worker_count(limit)
    with pytest.raises(InvalidArgumentError, match="n_envs"):
        parallel.check_worker_count(limit + 1, "n_envs")
    for bad in ("0", "-3", "many"):
        monkeypatch.setenv(parallel.MAX_WORKERS_VAR, bad)
        with pytest.raises(InvalidArgumentError, match=parallel.MAX_WORKERS_VAR):
            parallel.max_workers()
    monkeypatch.setenv(parallel.WORKER_THREADS_VAR, "0")
    with pytest.raises(InvalidArgumentError, match=parallel.WORKER_THREADS_VAR):
        parallel.worker_threads()
    assert parallel.vector_env_workers() is None  # not inside a vector env's construction
    assert not parallel.in_worker_process()
