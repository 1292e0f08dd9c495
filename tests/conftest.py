"""Shared test helpers: the optional reference data folder and a per-test cache dir.

The reference data (``../shared/data`` next to the repository) is real third-party data
that a user's machine will not have, so tests that need it are marked and skipped
cleanly when it is absent.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from tests.shared_data import SHARED_DATA  # noqa: E402 - after the path fix above


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ``../shared/data``; skips the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_cache(request: pytest.FixtureRequest, tmp_path_factory) -> Path:
    """A cache dir for the decoded CIFAR-10 JPEG arrays that survives between test runs.

    Decoding 60k JPEGs takes ~25 s once; ``$PRUNE_GYM_CACHE`` or else pytest's own cache
    folder keeps the result, so later runs load it in about a second.
    """
    if os.environ.get("PRUNE_GYM_CACHE"):
        return Path(os.environ["PRUNE_GYM_CACHE"]).expanduser()
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("prune_gym_cifar10"))
    return tmp_path_factory.mktemp("prune_gym_cifar10")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use the ``shared_data`` fixture get the ``shared_data`` marker too."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


# -- the embedded task, analysed once for the whole run ----------------------------------
@pytest.fixture(scope="session")
def task():
    """The embedded ``digits-cnn-v1`` task (trained on first use, then cached)."""
    from prune_gym.tasks import make_task

    return make_task("digits-cnn-v1")


@pytest.fixture(scope="session")
def net(task):
    """Its analysed network (topology included); every env built from it gets a private
    copy, which is much faster than analysing again."""
    from prune_gym import PrunableNetwork

    net = PrunableNetwork(task.model, task.example_inputs)
    net.topology  # noqa: B018 - built now so that the copies carry it
    return net


@pytest.fixture(scope="session")
def make(task, net):
    """``make(env_id, **kwargs)``: an environment on the embedded task's network."""
    import gymnasium as gym

    def _make(env_id: str, **kwargs) -> gym.Env:
        kwargs.setdefault("model", net)
        kwargs.setdefault("val_data", task.val_data)
        kwargs.setdefault("train_data", task.data.train.as_tuple())
        return gym.make(env_id, **kwargs)

    return _make
