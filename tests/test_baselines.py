"""Baselines meet the budget exactly as priced (the CLI's `baselines` is in test_cli.py)."""

from __future__ import annotations

import warnings

import pytest
import torch

from prune_gym import PrunableNetwork
from prune_gym.errors import InvalidArgumentError
from prune_gym.evaluate import Evaluator
from prune_gym.models import resnet20
from prune_gym.network import PruningWarning
from prune_gym.search import global_magnitude, random_search, run_baselines, uniform


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PruningWarning)
        return PrunableNetwork(resnet20(), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("constraint", ["macs", "params"])
@pytest.mark.parametrize("budget", [0.6, 0.8])
def test_deterministic_baselines_fit_the_budget_tightly(net, budget, constraint):
    full = net.metric([g.size for g in net.groups], constraint)
    for keep in (uniform(net, budget, constraint), global_magnitude(net, budget, constraint)):
        used = net.metric(keep, constraint) / full
        assert used <= budget
        assert used > budget - 0.1  # close to the budget, not trivially small


def test_uniform_keeps_the_same_fraction_everywhere(net):
    keep = uniform(net, 0.7)
    fractions = [k / g.size for k, g in zip(keep, net.groups)]
    assert max(fractions) - min(fractions) <= 1 / 16 + 1e-9  # rounding of 16-channel groups


def test_global_magnitude_prunes_unimportant_channels_first(net):
    keep = global_magnitude(net, 0.7)
    threshold = min(net.scores(i)[net.resolve(keep)[i]].min() for i in range(len(keep)))
    for i, g in enumerate(net.groups):
        dropped = sorted(set(range(g.size)) - set(net.resolve(keep)[i].tolist()))
        assert all(net.scores(i)[dropped] <= threshold)


def test_random_search_picks_the_best_candidate(net):
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    evaluator = Evaluator((x, y))
    keep = random_search(net, evaluator, 0.7, trials=4, seed=1)
    assert net.macs(keep) <= 0.7 * net.base_macs
    chosen = evaluator.evaluate_keep(net, keep).accuracy
    assert 1 <= evaluator.evaluations <= 4  # the chosen state was scored once, then cached
    results = run_baselines(net, evaluator, 0.7, trials=4, seed=1, methods=("random-search",))
    assert results[0].keep == keep and results[0].val_accuracy == chosen
    with pytest.warns(DeprecationWarning, match="hyphens"):  # the old spelling, for a release
        old = run_baselines(net, Evaluator((x, y)), 0.7, trials=4, seed=1,
                            methods=("random_search",))
    assert old[0].method == "random-search" and old[0].keep == keep


def test_bad_budgets_and_methods(net):
    for budget in (0, 1.5, -0.1, True, "half", float("nan")):
        with pytest.raises(InvalidArgumentError, match="budget"):
            uniform(net, budget)
    with pytest.raises(InvalidArgumentError, match=r"cannot be reached.*budget >="):
        uniform(net, net.min_ratio() / 2)  # below one channel in every group
    with pytest.raises(InvalidArgumentError, match="constraint='energy' is not known"):
        uniform(net, 0.5, "energy")
    with pytest.raises(InvalidArgumentError, match="needs latency_model"):
        uniform(net, 0.5, "latency")  # a latency budget without a model of this machine
    with pytest.raises(InvalidArgumentError, match="baselines"):
        run_baselines(net, Evaluator(fn=lambda m: 0.0), 0.5, methods=("magic",))
