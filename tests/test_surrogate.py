"""State tables and the surrogate fitted on them, on the embedded digits task's real network:
the generator is seeded and resumable, a changed table is refused, the surrogate is
deterministic, fast and refuses states of another network."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from prune_gym.errors import DataError, InvalidArgumentError
from prune_gym.surrogate.model import FlatTrees, fit_surrogate, rank_fidelity
from prune_gym.surrogate.table import load_table, table_paths

ROOT = Path(__file__).resolve().parents[1]
TASK = "digits-cnn-v1"


def _generator():
    spec = importlib.util.spec_from_file_location("state_tables",
                                                  ROOT / "benchmarks" / "state_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # its machine_info import
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def grow(folder: Path, states: int, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["state_tables.py", "--task", TASK, "--states",
                                      str(states), "--out", str(folder), "--flush-every", "7"])
    _generator().main()


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    with pytest.MonkeyPatch.context() as mp:
        grow(folder, 120, mp)
    return folder


@pytest.fixture(scope="module")
def scores(net) -> list[np.ndarray]:
    return [net.scores(g) for g in range(len(net.groups))]


def test_a_table_holds_every_sampler_scored(table_dir, net) -> None:
    table = load_table(TASK, table_dir)
    assert len(table) == 120 and table.manifest["rows"] == 120
    assert set(table.sources) == set(_generator().MIXTURE)
    assert table.group_sizes == [g.size for g in net.groups]
    ratios = table.columns["macs_ratio"]
    assert ratios.min() < 0.3 and ratios.max() > 0.8
    accuracy = table.columns["val_accuracy"]
    assert ((0 <= accuracy) & (accuracy <= 1)).all() and accuracy.std() > 0.05
    rounded = table.columns["rounded"] == 1
    assert rounded.any() and (table.counts[rounded] % 8 == 0).any()
    # the recorded MACs are the network's price of the recorded state
    for row in (0, 6, 17):
        state = table.unpack_mask(row)
        keep = ([np.flatnonzero(m).tolist() for m in state] if state is not None
                else table.counts[row].tolist())
        assert net.macs(keep) == table.columns["macs"][row]
    assert any(m is not None for m in table.masks)  # ChannelMask-v0's index states


def test_the_generator_resumes_to_the_same_rows(table_dir, tmp_path, monkeypatch) -> None:
    grow(tmp_path, 50, monkeypatch)
    csv_path, _ = table_paths(TASK, tmp_path)
    with csv_path.open("a") as f:
        f.write("50,uniform,0,0.5")  # an interrupted write: a partial last line
    grow(tmp_path, 60, monkeypatch)
    resumed, whole = load_table(TASK, tmp_path), load_table(TASK, table_dir)
    assert len(resumed) == 60
    assert (resumed.counts == whole.counts[:60]).all()
    assert np.allclose(resumed.columns["val_accuracy"], whole.columns["val_accuracy"][:60])
    assert len(resumed.manifest["runs"]) == 2  # one entry per invocation


def test_a_changed_table_is_refused(table_dir, tmp_path) -> None:
    for path in table_paths(TASK, table_dir):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    csv_path, _ = table_paths(TASK, tmp_path)
    text = csv_path.read_text().splitlines(keepends=True)
    text[5] = text[5].replace(",0.", ",1.", 1)
    csv_path.write_text("".join(text))
    with pytest.raises(DataError, match="sha256 .* manifest records"):
        load_table(TASK, tmp_path)
    with pytest.raises(DataError, match="no state table"):
        load_table("digits-resnet-v9", tmp_path)


def test_the_surrogate_is_deterministic_fast_and_ranks(table_dir, scores) -> None:
    table = load_table(TASK, table_dir)
    train, test = np.arange(90), np.arange(90, 120)
    first = fit_surrogate(table, scores, rows=train)
    second = fit_surrogate(table, scores, rows=train)
    masks = [table.unpack_mask(int(i)) for i in test]
    kwargs = dict(macs_ratio=table.columns["macs_ratio"][test],
                  params_ratio=table.columns["params_ratio"][test])
    a = first.predict(table.counts[test], masks, **kwargs)
    assert np.array_equal(a, second.predict(table.counts[test], masks, **kwargs))
    assert isinstance(first.models["val_accuracy"], FlatTrees)
    fidelity = rank_fidelity(a, table.columns["val_accuracy"][test])
    assert fidelity["spearman"] > 0.7 and fidelity["mae"] < 0.1
    noisy = [first.sample_noise(0.9, np.random.default_rng(s)) for s in (1, 1, 2)]
    assert noisy[0] == noisy[1] and all(0 <= v <= 1 for v in noisy)
    n = first.val_samples
    assert n == table.manifest["evaluator"]["val_samples"] == 270  # digits' validation split
    assert all(abs(v * n - round(v * n)) < 1e-9 for v in noisy)  # Binomial(n, p) / n


def test_flat_trees_agree_with_scikit_learn() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.random((400, 5))
    y = np.sin(4 * x[:, 0]) + x[:, 1] * x[:, 2]
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(x, y)
    flat = FlatTrees(model, x[:50])
    probe = rng.random((100, 5))
    assert np.allclose(flat.predict(probe), model.predict(probe), atol=1e-9)


def test_bad_states_are_named(table_dir, scores) -> None:
    surrogate = fit_surrogate(load_table(TASK, table_dir), scores)
    with pytest.raises(InvalidArgumentError, match="4 groups, but .* knows 3: .*another network"):
        surrogate.predict([4, 4, 4, 4], macs_ratio=0.5, params_ratio=0.5)
    with pytest.raises(InvalidArgumentError, match="counts must lie in"):
        surrogate.predict([0, 4, 4], macs_ratio=0.5, params_ratio=0.5)
    with pytest.raises(InvalidArgumentError, match="target='energy'"):
        surrogate.predict([4, 4, 4], macs_ratio=0.5, params_ratio=0.5, target="energy")
    with pytest.raises(InvalidArgumentError, match="one score per channel"):
        fit_surrogate(load_table(TASK, table_dir), scores[:2])
    x = surrogate.features([4, 4, 4], macs_ratio=3.0, params_ratio=0.5)
    assert surrogate.outside_support(x).all()


COMMITTED = sorted(p.stem for p in (ROOT / "prune_gym" / "surrogate" / "tables").glob("*.json"))


@pytest.mark.parametrize("task_name", COMMITTED)
def test_a_committed_table_is_what_its_generator_draws(task_name, monkeypatch) -> None:
    """The committed rows are the generator's (same states for the same indices), so the
    table can be extended, or rebuilt, by anyone: its first rows are drawn again and
    compared (drawing costs no evaluation)."""
    from prune_gym.tasks import make_task
    from tests.shared_data import SHARED_DATA, has_shared

    if task_name.startswith("cifar10"):
        depth = task_name.split("resnet")[1].split("-")[0]
        files = ("cifar10-jpg.tar.gz", f"resnet{depth}-cifar10-akamaster.th")
        if not has_shared(*files):
            pytest.skip(f"{', '.join(files)} absent from {SHARED_DATA}")
    monkeypatch.setenv("PRUNE_GYM_DATA", str(SHARED_DATA))
    table = load_table(task_name)
    generator = _generator()
    overrides = {"max_train": 10} if task_name.startswith("cifar10") else {}
    task = make_task(task_name, **overrides)
    from agents.methods import make_network

    net = make_network(task)
    assert table.group_sizes == [g.size for g in net.groups]
    sampler = generator.Sampler(task, net, table.manifest["sampling"]["perturb_agent_bases"])
    for row in range(min(len(table), 2 * len(generator.MIXTURE))):
        source, keep, rounded, _ = sampler.draw(row)
        assert (source, int(rounded)) == (table.sources[row], table.columns["rounded"][row])
        if table.masks[row] is None:
            assert list(keep) == table.counts[row].tolist(), f"row {row}"
        else:
            assert [len(k) for k in keep] == table.counts[row].tolist(), f"row {row}"
            assert net.macs(keep) == table.columns["macs"][row]
