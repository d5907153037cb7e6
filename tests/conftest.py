"""Shared fixtures: the repository's own configs and params, and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from biostream.core.config import Configs, load_yaml, merge_profile
from biostream.core.params import validate
from biostream.data.dataset import Dataset, build_dataset
from biostream.sources.synthetic import Physiology, generate_cohort

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def configs() -> Configs:
    return Configs.load(ROOT / "configs/signals.yaml", ROOT / "configs/alarms.yaml")


@pytest.fixture(scope="session")
def physiology() -> Physiology:
    return Physiology.from_yaml(ROOT / "configs/synthetic.yaml")


@pytest.fixture(scope="session")
def small_params() -> dict:
    """params.yaml with the small profile merged in: what the pipeline tests run."""
    return merge_profile(load_yaml(ROOT / "params.yaml"), load_yaml(ROOT / "configs/profiles/small.yaml"))


def make_dataset(params: dict, configs: Configs, physiology: Physiology) -> Dataset:
    p = validate(params)
    cohort = generate_cohort(p.generate, physiology, configs.signals)
    return build_dataset(
        cohort.vitals,
        cohort.patients.assign(source="synthetic"),
        configs,
        p.labels,
        p.splits,
        events=cohort.events,
    )


@pytest.fixture(scope="session")
def small_dataset(small_params, configs, physiology) -> Dataset:
    return make_dataset(small_params, configs, physiology)


# Two workers (`make test`: pytest -n 2): the tests on the session's reproduced copy run on one worker, so its
# `dvc repro` runs once; the shared MLflow server's tests on one worker; every other test goes to whichever worker
# is free, the largest groups first. (pytest-xdist's own `xdist_group` marks rename node ids, which pytest 9 no longer
# lets a plugin do, hence a scheduler.) A new test file on the `repo` fixture belongs in SESSION_REPO.
SESSION_REPO = {f"tests/pipeline/{name}.py" for name in (
    "test_dvc_pipeline", "test_mlflow_ui", "test_real_recordings", "test_service", "test_tune_workers", "test_board",
    "test_hostile")}
ALONE = {"tests/pipeline/test_dvc_pipeline.py::test_a_pipeline_that_learns_from_local_recordings_only"}  # no repo
SHARED_SERVER = "tests/pipeline/test_shared_tracking.py"


def group_of(nodeid: str) -> str:
    """The work unit a test is scheduled in: its group, else the test itself."""
    path = nodeid.split("::", 1)[0]
    if path in SESSION_REPO and nodeid.split("[", 1)[0] not in ALONE:
        return "session-repo"
    return "shared-server" if path == SHARED_SERVER else nodeid


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without the plugin, nothing to schedule
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return Groups(config, log)
