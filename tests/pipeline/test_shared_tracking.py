"""The scale path's tracking store: a real `mlflow server` on a PostgreSQL backend store with proxied artifacts (on a
free port), the small profile's `dvc repro` against it (studies on PostgreSQL too), the registry gate's lock across
processes (a PostgreSQL advisory lock, released when its holder dies), the compare-runs notebook against the
server, and two experiments queued with `dvc exp run --queue` run by `dvc queue start --jobs 2` against the same
server."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import (
    copy_repo,
    dvc,
    env_for,
    mlflow_server,
    run,
    scratch_database,
    stop_processes_in,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

MODEL = "vitals-anomaly-detector"


@pytest.fixture(scope="module")
def databases():
    """Scratch databases: the MLflow server's backend store, and the studies' storage."""
    with scratch_database("biostream_mlflow") as mlflow_db, scratch_database("biostream_optuna") as optuna_db:
        yield mlflow_db, optuna_db


@pytest.fixture(scope="module")
def server(databases, tmp_path_factory):
    """`mlflow server` as docs/scaling-out.md starts it (PostgreSQL backend, proxied artifacts); yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with mlflow_server(databases[0], folder, dict(os.environ), "--artifacts-destination", str(folder / "artifacts"),
                       "--serve-artifacts") as url:
        yield url


@pytest.fixture(scope="module")
def shared(server, databases, tmp_path_factory):
    """A copy on the small profile whose tracking store is the server, registry lock and studies on PostgreSQL;
    `dvc repro` run in it. Yields (repo, the repro's output)."""
    repo = copy_repo(tmp_path_factory.mktemp("shared"), "configs/profiles/small.yaml")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["uri"] = server
    params["register"]["lock_url"] = databases[0]
    params["tune"]["storage"] = databases[1]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = dvc(repo, "repro")
    run(repo, "git", "add", "-A")
    run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "reproduced")
    return repo, proc.stdout + proc.stderr


def client_of(url: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=url)


def runs_by_stage(url: str) -> dict[str, list]:
    client = client_of(url)
    exp = client.get_experiment_by_name("biostream")
    out: dict[str, list] = {}
    for r in client.search_runs([exp.experiment_id], max_results=5000):
        out.setdefault(r.data.tags.get("stage", "?"), []).append(r)
    return out


def test_the_pipeline_runs_against_a_shared_mlflow_server(shared, server, tmp_path):
    repo, out = shared
    for stage in ("tune@iforest", "tune@lstm_ae", "train", "evaluate", "register", "package"):
        assert f"Running stage '{stage}'" in out
    assert not (repo / "stores/mlflow.db").exists(), "nothing may be tracked in a local store"
    assert not (repo / "stores/mlartifacts").exists(), "the server keeps the artifacts (proxied)"
    runs = runs_by_stage(server)
    assert {"tune", "train", "evaluate"} <= set(runs), set(runs)
    train = runs["train"]
    assert {r.data.tags["detector"] for r in train} == {"iforest", "ocsvm", "lstm_ae", "clinical"}
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:/") for r in train), train[0].info.artifact_uri

    decision = json.loads((repo / "results/register.json").read_text())
    assert decision["created"] and decision["promoted"] and decision["champion_after"] == decision["challenger_version"]
    client = client_of(server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == decision["challenger_version"] and champion.tags["detector"] == decision["detector"]
    assert client.get_model_version_by_alias(MODEL, "challenger").version == decision["challenger_version"]

    # the registered model loads from the server alone, in another folder: its artifacts are the server's
    probe = ("import mlflow, numpy as np, sys; mlflow.set_tracking_uri(sys.argv[1]); "
             "m = mlflow.pyfunc.load_model(f'models:/{sys.argv[2]}@champion'); "
             "s = m.metadata.get_input_schema().inputs[0].shape; "
             "print(m.predict(np.full((1, s[1], s[2]), 80.0))['score'][0])")
    proc = subprocess.run([sys.executable, "-c", probe, server, MODEL], cwd=tmp_path, env=env_for(repo),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert math.isfinite(float(proc.stdout.strip().splitlines()[-1]))

    bento = json.loads((repo / "results/bento.json").read_text())
    assert bento["registered_version"] == decision["challenger_version"] and bento["registered_model"] == MODEL


def test_a_rerun_against_the_server_is_a_noop_and_registers_nothing(shared, server):
    repo, _ = shared
    before = client_of(server).search_model_versions(f"name='{MODEL}'")
    again = dvc(repo, "repro")
    assert "Running stage" not in again.stdout
    assert len(client_of(server).search_model_versions(f"name='{MODEL}'")) == len(before)


def test_the_compare_runs_notebook_reads_the_server(shared, server):
    from tests.pipeline.test_dvc_pipeline import execute_notebook

    repo, _ = shared
    outputs = execute_notebook(repo, "02_compare_runs.ipynb")
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"store {server}" in text, text[:2000]


def test_the_registry_lock_holds_across_processes_and_dies_with_its_holder(databases):
    from biostream.tracking.lock import advisory_lock, lock_target

    url = databases[0]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom biostream.tracking.lock import advisory_lock\n"
         "with advisory_lock(sys.argv[1], sys.argv[2], 10):\n    print('held', flush=True)\n    time.sleep(600)\n",
         url, MODEL], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with (pytest.raises(TimeoutError, match="another register run holds the registry lock"),
              advisory_lock(url, MODEL, timeout_s=1.5, poll_s=0.2)):
            pass
        assert time.monotonic() - start >= 1.5
        with advisory_lock(url, "another-model", timeout_s=1):  # a lock per registered model
            pass
        holder.send_signal(signal.SIGKILL)  # the holder dies: PostgreSQL ends its session and its lock
        holder.wait(10)
        with advisory_lock(url, MODEL, timeout_s=30, poll_s=0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert lock_target("http://mlflow:5000", url, Path("x.json")) == ("postgres", url)


def test_two_queued_experiments_run_in_parallel_against_the_server(shared, server):
    repo, _ = shared
    before = runs_by_stage(server)
    dvc(repo, "exp", "run", "--queue", "-n", "more-iforest", "-S", "tune.n_trials.iforest=3")
    dvc(repo, "exp", "run", "--queue", "-n", "more-ocsvm", "-S", "tune.n_trials.ocsvm=3")
    try:
        # its workers outlive the command and hold its output pipes: start it with no pipes, then poll
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "--jobs", "2"], cwd=repo, env=env_for(repo),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        deadline = time.monotonic() + 900
        while True:
            status = dvc(repo, "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            assert time.monotonic() < deadline, status
            time.sleep(2)
    finally:
        dvc(repo, "queue", "stop", check=False)
        stop_processes_in(repo)  # its workers outlive `queue stop` (found alive 24 min after a suite had ended)
    assert status.count("Success") == 2, status + dvc(repo, "queue", "logs", "more-iforest", check=False).stdout
    spans = {}
    for name in ("more-iforest", "more-ocsvm"):
        stamps = re.findall(r"^(\d\d:\d\d:\d\d) INFO", dvc(repo, "queue", "logs", name).stdout, flags=re.M)
        spans[name] = (min(stamps), max(stamps))
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1, f"the two experiments did not run at once: {spans}"

    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = {e.get("name") for rev in shown for e in (rev.get("experiments") or [])}
    assert {"more-iforest", "more-ocsvm"} <= names, names

    after = runs_by_stage(server)
    new_train = [r for r in after["train"] if r.info.run_id not in {x.info.run_id for x in before["train"]}]
    assert len(new_train) == 2 * 4, "each experiment trains its four detectors against the shared store"
    new_tune = {r.data.tags["detector"] for r in after["tune"]
                if r.info.run_id not in {x.info.run_id for x in before["tune"]}
                and "mlflow.parentRunId" not in r.data.tags}
    assert new_tune == {"iforest", "ocsvm"}, new_tune
    # whatever order the experiments registered in: the champion is the best safe version (an alias names one)
    client = client_of(server)
    champion = client.get_model_version(MODEL, client.get_registered_model(MODEL).aliases["champion"])
    safe = [v for v in client.search_model_versions(f"name='{MODEL}'") if v.tags.get("safety") == "passed"]
    assert champion.tags["safety"] == "passed"
    value = lambda v: float(v.tags["metric.physiological.weighted_f1"])  # noqa: E731
    assert value(champion) == max(value(v) for v in safe)


def test_register_against_a_server_without_a_shared_lock_is_refused_before_it_starts(shared, server, tmp_path):
    repo, _ = shared
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["register"]["lock_url"] = None
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = len(client_of(server).search_model_versions(f"name='{MODEL}'"))
    proc = run(repo, sys.executable, "-m", "pipelines.register", "--params", str(tmp_path / "params.yaml"),
               "--models", "models", "--features", "data/features", "--synthetic", "data/synthetic", "--vitaldb",
               "data/vitaldb", "--recordings", "data/recordings", "--real", "data/real", "--evaluation",
               "metrics/evaluate.json", "--out",
               str(tmp_path / "decision.json"), check=False)
    assert proc.returncode != 0 and "set params.yaml: register.lock_url to a PostgreSQL URL" in proc.stderr
    assert not (tmp_path / "decision.json").exists()
    assert len(client_of(server).search_model_versions(f"name='{MODEL}'")) == before
