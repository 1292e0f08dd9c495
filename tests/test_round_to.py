"""``round_to``: kept counts in multiples of a SIMD width, for every count-setting path (the
rounding helper, LayerRatio-v0 and DNNGraph-v0, the baselines, ``run_method``), with the
budget always checked on the rounded counts."""

from __future__ import annotations

import numpy as np
import pytest

from agents.baselines import global_magnitude, random_search, uniform
from agents.methods import make_evaluator, make_network, run_method
from prune_gym.errors import InvalidArgumentError
from prune_gym.keep import round_counts

BUDGET = 0.5


def is_rounded(keep, sizes, multiple: int) -> bool:
    """Every count a multiple, or its whole group, or a group smaller than the multiple."""
    return all(k % multiple == 0 or k == s or s < multiple for k, s in zip(keep, sizes))


def test_round_counts_by_hand() -> None:
    sizes = [64, 64, 64, 64, 20, 20, 6, 64]
    counts = [3, 12, 13, 64, 20, 19, 5, 60]
    # 3 -> at least 8; 12 -> 16 (half up); 13 -> 16; a whole group stays whole; 20 whole;
    # 19 -> 16 (at most 20 - 20 % 8); a group under 8 as it is; 60 -> 64 (7.5 rounds up)
    assert round_counts(counts, sizes, 8).tolist() == [8, 16, 16, 64, 20, 16, 5, 64]
    assert round_counts(counts, sizes, None).tolist() == counts
    assert round_counts(counts, sizes, 1).tolist() == counts


@pytest.mark.parametrize("mode", ["cmdp", "project"])
@pytest.mark.parametrize("env_id", ["LayerRatio-v0", "DNNGraph-v0"])
def test_envs_round_every_count_and_price_the_rounded_state(make, env_id, mode) -> None:
    env = make(env_id, budget=BUDGET, round_to=8, constraint_mode=mode, eval_cache=64)
    base = env.unwrapped
    sizes = base.sizes.tolist()
    assert any(s >= 16 for s in sizes), "the test needs groups wider than the multiple"
    env.action_space.seed(0)
    finals = []
    for episode in range(6):
        env.reset(seed=episode)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(env.action_space.sample())
            assert is_rounded(base.keep, sizes, 8), base.keep
            done = term or trunc
        # the cost and the feasibility are those of the rounded state
        assert info["macs"] == base.net.macs(base.keep)
        finals.append(info)
    if mode == "project":
        assert all(i["feasible"] and i["cost"] == 0.0 for i in finals)
    env.close()


def test_rounding_changes_what_the_env_reaches(make) -> None:
    """The same actions end in other, rounded states: the option is not a no-op."""
    keeps = []
    for round_to in (None, 8):
        env = make("LayerRatio-v0", budget=BUDGET, round_to=round_to,
                   constraint_mode="project", eval_cache=64)
        env.reset(seed=0)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(np.array([-0.55], dtype=np.float32))
            done = term or trunc
        keeps.append(env.unwrapped.keep)
        env.close()
    plain, rounded = keeps
    assert plain != rounded
    assert not is_rounded(plain, make("LayerRatio-v0").unwrapped.sizes, 8)


def test_bad_round_to_is_named(make) -> None:
    for bad in (0, -8, 2.5, "8", True):
        with pytest.raises(InvalidArgumentError, match="round_to"):
            make("LayerRatio-v0", round_to=bad)
    with pytest.raises(InvalidArgumentError, match="round_to.*ChannelMask-v0"):
        make("ChannelMask-v0", round_to=8)
    # at least 16 channels per group keeps more than 10 % of the MACs
    with pytest.raises(InvalidArgumentError, match="round_to=16"):
        make("DNNGraph-v0", budget=0.1, round_to=16, constraint_mode="project")


def test_baselines_round_and_fit(net, task) -> None:
    sizes = [g.size for g in net.groups]
    limit = BUDGET * net.base_macs
    evaluator = make_evaluator(task)
    states = {
        "uniform": uniform(net, BUDGET, round_to=8),
        "global_magnitude": global_magnitude(net, BUDGET, round_to=8),
        "random_search": random_search(net, evaluator, BUDGET, trials=5, round_to=8),
    }
    for name, keep in states.items():
        assert is_rounded(keep, sizes, 8), (name, keep)
        assert net.macs(keep) <= limit, name
    assert states["uniform"] != uniform(net, BUDGET)
    with pytest.raises(InvalidArgumentError, match="round_to=16"):
        uniform(net, 0.1, round_to=16)
    for bad in (0, 2.5):
        with pytest.raises(InvalidArgumentError, match="round_to"):
            global_magnitude(net, BUDGET, round_to=bad)


def test_run_method_takes_round_to_where_counts_are_set(tmp_path) -> None:
    result = run_method("uniform", "digits-cnn-v1", budget=BUDGET, round_to=8,
                        run_dir=tmp_path / "u")
    sizes = [g.size for g in make_network("digits-cnn-v1").groups]
    assert result.feasible and is_rounded(result.keep, sizes, 8)
    assert result.keep != run_method("uniform", "digits-cnn-v1", budget=BUDGET).keep
    with pytest.raises(InvalidArgumentError, match="round_to is not for method='balemans'"):
        run_method("balemans", "digits-cnn-v1", budget=BUDGET, evaluations=2, round_to=8)
    # a run directory remembers it: resuming with another round_to is refused
    from agents.train import RunDirectoryError

    with pytest.raises(RunDirectoryError, match="round_to"):
        run_method("uniform", "digits-cnn-v1", budget=BUDGET, run_dir=tmp_path / "u",
                   resume=True)


def test_cli_search_round_to(tmp_path, capsys) -> None:
    from agents.cli import main
    from agents.results import read_results

    out = tmp_path / "run"
    assert main(["search", "--task", "digits-cnn-v1", "--agent", "global-magnitude",
                 "--budget", "0.5", "--round-to", "8", "--out", str(out)]) == 0
    (row,) = read_results(out / "results.csv")
    sizes = [g.size for g in make_network("digits-cnn-v1").groups]
    assert is_rounded(row["keep"], sizes, 8) and row["feasible"]
    assert main(["search", "--task", "digits-cnn-v1", "--agent", "rl-pruner", "--round-to",
                 "8", "--out", str(tmp_path / "r")]) == 2
    assert "round_to is not for method='rl-pruner'" in capsys.readouterr().err
