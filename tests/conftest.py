"""Shared fixtures: the repository's own configs and params, and a tiny synthetic cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from biostream.core.config import Configs, LabelParams, SplitParams, load_yaml, merge_profile
from biostream.data.dataset import Dataset, build_dataset
from biostream.sources.synthetic import CohortParams, Physiology, generate_cohort

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
    cohort = generate_cohort(CohortParams.from_params(params), physiology, configs.signals)
    return build_dataset(
        cohort.vitals,
        cohort.patients.assign(source="synthetic"),
        configs,
        LabelParams.from_params(params),
        SplitParams.from_params(params),
        events=cohort.events,
    )


@pytest.fixture(scope="session")
def small_dataset(small_params, configs, physiology) -> Dataset:
    return make_dataset(small_params, configs, physiology)


# Two workers (`make test`: pytest -n 2 --dist loadgroup): the tests on the session's reproduced copy share one
# worker, and so one `dvc repro`; the shared MLflow server's tests another; every other test goes to whichever worker
# is free. Run alone (no -n), the groups change nothing.
SHARED_SERVER = "tests/pipeline/test_shared_tracking.py"


@pytest.hookimpl(tryfirst=True)  # before xdist's, which names each item's group from these marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if {"repo", "reproduced"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("session-repo"))
        elif item.nodeid.startswith(SHARED_SERVER):
            item.add_marker(pytest.mark.xdist_group("shared-server"))
