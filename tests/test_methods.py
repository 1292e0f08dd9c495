"""agents.methods: every method spends exactly the evaluations it is given, reports the
state it found as the engine prices and scores it, and leaves a run directory."""

from __future__ import annotations

import json

import pytest

from agents.methods import make_evaluator, make_network, method_names, run_method
from prune_gym.errors import InvalidArgumentError

TASK = "digits-cnn-v1"


def check_consistent(result) -> None:
    """The reported state is priced and scored exactly as a fresh evaluation does."""
    net = make_network(TASK)
    macs, params = net.price(result.keep)
    assert (macs, params) == (result.macs, result.params)
    assert result.feasible == (macs <= result.budget * net.base_macs)
    evaluator = make_evaluator(TASK, result.val_samples)
    assert evaluator.evaluate_keep(net, result.keep).accuracy == pytest.approx(
        result.val_accuracy, abs=1e-9)
    evaluations = [e for e, _ in result.history]
    assert evaluations == sorted(evaluations) and evaluations[-1] == result.evaluations
    best = [a for _, a in result.history if a is not None]
    assert best == sorted(best)  # the best so far never falls


@pytest.mark.parametrize("name", ["uniform", "global-magnitude"])
def test_heuristics_spend_one_evaluation(name) -> None:
    result = run_method(name, TASK, budget=0.5)
    assert result.evaluations == 1 and result.feasible
    check_consistent(result)


def test_random_search_spends_exactly_its_evaluations() -> None:
    result = run_method("random-search", TASK, budget=0.5, evaluations=9, seed=3)
    assert result.evaluations == 9 and len(result.history) == 9
    assert result.feasible and result.feasible_fraction == 1.0
    check_consistent(result)
    again = run_method("random-search", TASK, budget=0.5, evaluations=9, seed=3)
    assert again.keep == result.keep  # seeded


def test_rl_agent_stops_at_its_evaluations() -> None:
    result = run_method("ppo-lagrangian-gat", TASK, budget=0.5, evaluations=12, seed=0,
                        val_samples=100)
    assert result.evaluations == 12
    assert result.env_id == "DNNGraph-v0" and result.val_samples == 100
    check_consistent(result)


def test_channel_mask_state_is_kept_channel_indices() -> None:
    result = run_method("balemans", TASK, budget=0.6, evaluations=3, seed=0, val_samples=100)
    assert all(isinstance(k, list) for k in result.keep)
    check_consistent(result)


def test_run_directory_and_resume(tmp_path) -> None:
    pytest.importorskip("agents.results")
    run = tmp_path / "run"
    seen = []
    result = run_method("random-search", TASK, budget=0.5, evaluations=5, run_dir=run,
                        on_progress=lambda e, a: seen.append((e, a)))
    assert seen[-1] == (5, result.val_accuracy)
    for name in ("search.json", "curve.csv", "results.csv", "best.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "best.json").read_text())["keep_state"] == result.keep
    from agents.train import RunDirectoryError

    with pytest.raises(RunDirectoryError, match="already holds a run"):
        run_method("random-search", TASK, budget=0.5, evaluations=5, run_dir=run)
    with pytest.raises(RunDirectoryError, match="budget"):
        run_method("random-search", TASK, budget=0.4, evaluations=5, run_dir=run, resume=True)
    with pytest.raises(RunDirectoryError, match="no run to resume"):
        run_method("uniform", TASK, budget=0.5, run_dir=tmp_path / "empty", resume=True)


def test_bad_input_is_named() -> None:
    with pytest.raises(InvalidArgumentError, match="known method.*random-search"):
        run_method("nope", TASK, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="task='nope'.*digits-cnn-v1"):
        run_method("uniform", "nope", budget=0.5)
    with pytest.raises(InvalidArgumentError, match="evaluations=K"):
        run_method("random-search", TASK, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="evaluations=K or timesteps=N"):
        run_method("ppo-lagrangian-gat", TASK, budget=0.5)
    with pytest.raises(InvalidArgumentError, match="timesteps is for RL agents"):
        run_method("random-search", TASK, budget=0.5, timesteps=10)
    with pytest.raises(InvalidArgumentError, match="budget"):
        run_method("uniform", TASK, budget=1e-6)
    with pytest.raises(InvalidArgumentError, match="evaluations"):
        run_method("random-search", TASK, budget=0.5, evaluations=0)
    assert "uniform" in method_names()
