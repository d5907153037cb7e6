"""The reviewer's view: a real `mlflow server` on the store the small profile's `dvc repro` wrote, driven by
headless Chromium (Debian's package, through Playwright). Screenshots go to `test-artifacts/mlflow-ui/`
(or `$BIOSTREAM_TEST_ARTIFACTS/mlflow-ui/`)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.pipeline.conftest import chromium_page, env_for, mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MODEL = "vitals-anomaly-detector"
SHOTS = Path(os.environ.get("BIOSTREAM_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "mlflow-ui"



@pytest.fixture(scope="module")
def server(repo, reproduced, tmp_path_factory):
    with mlflow_server(f"sqlite:///{repo / 'stores/mlflow.db'}", tmp_path_factory.mktemp("mlflow_ui"),
                       env_for(repo)) as base:
        yield base


@pytest.fixture(scope="module")
def page(server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(1600, 1000, 60_000) as pg:
        yield pg


def api(server: str, path: str, body: dict | None = None) -> dict:
    """MLflow's REST API (GET, or POST with a JSON body)."""
    req = urllib.request.Request(f"{server}/api/2.0/mlflow/{path}", headers={"Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_experiment_page_lists_the_pipeline_runs(server, page):
    exp = api(server, "experiments/get-by-name?experiment_name=biostream")["experiment"]
    page.goto(f"{server}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning")
    page.get_by_text("evaluate-ocsvm").first.wait_for()
    for name in ("train-iforest", "evaluate-comparison"):
        page.get_by_text(name).first.wait_for()
    page.screenshot(path=str(SHOTS / "experiment.png"), full_page=True)


def test_run_comparison_shows_the_same_metrics_for_every_detector(server, page):
    exp = api(server, "experiments/get-by-name?experiment_name=biostream")["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 500,
                                       "filter": "tags.stage = 'evaluate'"})["runs"]
    by_name = {r["info"]["run_name"]: r for r in sorted(runs, key=lambda r: r["info"]["start_time"])}  # newest
    ids = [by_name[f"evaluate-{d}"]["info"]["run_id"] for d in ("clinical", "iforest", "ocsvm", "lstm_ae")]
    page.goto(f"{server}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([exp['experiment_id']])}")
    page.get_by_text("physiological.event_f1").first.wait_for()
    for d in ("evaluate-clinical", "evaluate-lstm_ae"):
        page.get_by_text(d).first.wait_for()
    metrics = {m["key"]: m["value"] for m in by_name["evaluate-ocsvm"]["data"]["metrics"]}
    # a value the page cannot show as anything else (a perfect 1.0 on the tests' small cohort would read "1")
    # (the page renders the rows in view: the physiological.* block, which holds the awaited physiological.event_f1)
    key = next(k for k in ("physiological.event_f1", "physiological.alarms_per_hour", "physiological.weighted_f1",
                           "physiological.event_recall") if 0 < metrics[k] < 0.999 or metrics[k] > 1.001)
    page.get_by_text(key).first.wait_for()
    value = f"{metrics[key]:.3f}"
    # the names are drawn before the values (under load, seconds before): wait for the value, up to the timeout
    page.wait_for_function("v => document.body.innerText.includes(v)", arg=value)
    assert value in page.inner_text("body"), f"ocsvm's {key} {value} is not on the page"
    page.screenshot(path=str(SHOTS / "compare-runs.png"), full_page=True)


def test_registered_model_page_shows_the_champion_and_its_metrics(server, page):
    champion = api(server, f"registered-models/alias?name={MODEL}&alias=champion")["model_version"]
    version = champion["version"]
    page.goto(f"{server}/#/models/{MODEL}")
    page.get_by_text("champion").first.wait_for()
    page.get_by_text(f"Version {version}").first.wait_for()
    page.screenshot(path=str(SHOTS / "registered-model.png"), full_page=True)

    page.goto(f"{server}/#/models/{MODEL}/versions/{version}")
    page.get_by_text("champion").first.wait_for()
    tags = {t["key"]: t["value"] for t in champion["tags"]}
    page.get_by_text(tags["detector"]).first.wait_for()
    page.get_by_text("Test metrics").first.wait_for()  # the model card (the version's description)
    f1 = float(tags["metric.physiological.event_f1"])
    assert f"{f1:.3f}" in page.inner_text("body"), f"the champion's event F1 {f1:.3f} is not on its page"
    page.get_by_text("Safety floor").first.wait_for()
    page.screenshot(path=str(SHOTS / "champion-version.png"), full_page=True)
