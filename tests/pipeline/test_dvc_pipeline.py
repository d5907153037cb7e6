"""The real pipeline: `dvc repro` in a temporary copy of the repository on the small profile, a no-op
second run, metrics, param scoping, byte-for-byte reproducibility, and the data-overview notebook."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from biostream.core.params import load_params, validate
from tests.conftest import ROOT
from tests.pipeline.conftest import DATASETS, dvc, env_for, run, stage

pytestmark = pytest.mark.slow


def test_repro_runs_every_stage_offline(repo, reproduced):
    out = reproduced.stdout + reproduced.stderr
    for name in ("generate", "ingest_vitaldb", "ingest_recordings", "ingest_real", "featurize", "tune@iforest",
                 "tune@ocsvm", "tune@lstm_ae", "train", "evaluate", "register"):
        assert f"Running stage '{name}'" in out
    assert "NO VITALDB DATA" in out, "the empty VitalDB dataset must be announced loudly"
    for f in ("vitals", "events", "alarm_events", "patients"):
        for dataset in ("synthetic", "vitaldb", "recordings"):
            assert (repo / f"data/{dataset}/{f}.parquet").is_file(), (dataset, f)
    assert json.loads((repo / "metrics/recordings.json").read_text())["status"] == "empty"
    synthetic = json.loads((repo / "metrics/synthetic.json").read_text())
    assert synthetic["patients"] == yaml.safe_load((repo / "params.yaml").read_text())["generate"]["n_patients"]
    vitaldb = json.loads((repo / "metrics/vitaldb.json").read_text())
    assert vitaldb["status"] == "empty" and vitaldb["reasons"]


def test_second_repro_is_a_noop(repo, reproduced):
    again = dvc(repo, "repro")
    assert "Running stage" not in again.stdout
    assert "didn't change" in again.stdout or "up to date" in again.stdout
    assert "up to date" in dvc(repo, "status").stdout


def test_metrics_show_lists_both_manifests(repo, reproduced):
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert files["metrics/synthetic.json"]["data"]["patients"] > 0
    assert files["metrics/vitaldb.json"]["data"]["status"] == "empty"


def test_params_are_scoped_to_their_stage(repo, reproduced):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["generate"]["seed"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = dvc(repo, "status", "--json").stdout
        changed = set(json.loads(status))
        assert changed == {"generate"}, f"only generate reads generate.seed, got {changed}"
    finally:
        run(repo, "git", "checkout", "--", "params.yaml")


def test_same_params_same_bytes(repo, reproduced):
    before = (repo / "dvc.lock").read_text()
    dvc(repo, "repro", "--force", "generate")
    assert (repo / "dvc.lock").read_text() == before


def execute_notebook(repo: Path, name: str) -> list:
    """Run a notebook of the copy headless against the copy's outputs; its code cells' outputs, none an error."""
    nb = nbformat.read(repo / "notebooks" / name, as_version=4)
    os.environ["BIOSTREAM_ROOT"] = str(repo)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(repo / "notebooks")}}).execute()
    finally:
        del os.environ["BIOSTREAM_ROOT"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


def test_data_overview_notebook_runs(repo, reproduced):
    outputs = execute_notebook(repo, "01_data_overview.ipynb")
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3, "the plots were drawn"
    text = "".join(o.get("text", "") for o in outputs)
    assert "patients" in text and "status: empty" in text


def test_featurize_outputs_and_train_only_scaler(repo, reproduced):
    from biostream.data.dataset import read_dataset
    from biostream.features import InputPipeline, Preprocessor, feature_min_scale, feature_names
    from biostream.features.readiness import learned_defined

    table = pd.read_parquet(repo / "data/features/synthetic.parquet")
    pipeline = InputPipeline.from_dict(json.loads((repo / "data/features/input_pipeline.json").read_text()))
    params = yaml.safe_load((repo / "params.yaml").read_text())["featurize"]
    names = feature_names(pipeline.signals)
    vitals = read_dataset(repo / "data/synthetic").vitals
    # every second of validation and test patients, every train_stride_s-th second of training patients
    per_split = table.groupby("split").size()
    seconds = vitals.groupby("split").size()
    assert per_split["test"] == seconds["test"] and per_split["val"] == seconds["val"]
    assert per_split["train"] < seconds["train"] / (params["train_stride_s"] - 0.5)
    # a source the models only evaluate on (the real recordings): every second of every patient
    real = pd.read_parquet(repo / "data/features/real.parquet")
    assert len(real) == len(read_dataset(repo / "data/real").vitals)
    assert (real.loc[real["time_s"] < 269, "signals_read"] == 0).all(), "nothing read in a recording's first 270 s"
    # the scaler is fitted on training patients only (the seconds a learned model scores), its tails on their
    # normal rows
    train = (table["split"] == "train") & learned_defined(table)
    normal = (table.loc[train, "label"] == 0) & (table.loc[train, "artefact"] == 0)
    expected = Preprocessor.fit(table.loc[train, names].to_numpy(np.float64),
                                vitals.loc[vitals["split"] == "train", list(pipeline.signals)].to_numpy(np.float64),
                                feature_min_scale(pipeline.signals, pipeline.geometry), normal=normal.to_numpy())
    np.testing.assert_allclose(pipeline.preprocessor.feature_median, expected.feature_median)
    np.testing.assert_allclose(pipeline.preprocessor.feature_scale, expected.feature_scale)
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert next(iter(shown.values()))["data"]["metrics/featurize.json"]["data"]["synthetic"]["windows"] == len(table)


def test_mlproject_entry_point_calls_the_stage_cli(repo, reproduced, tmp_path):
    env = env_for(repo)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", ".", "-e", "ingest_vitaldb", "--env-manager", "local",
         "-P", f"out={tmp_path / 'vitaldb'}", "-P", f"metrics={tmp_path / 'vitaldb.json'}"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "vitaldb.json").read_text())["dataset"] == "vitaldb"
    assert (tmp_path / "vitaldb" / "vitals.parquet").is_file()


def mlflow_runs(repo: Path) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'stores/mlflow.db'}")
    return mlflow.search_runs(experiment_names=["biostream"])


def test_tune_writes_best_params_and_mlflow_runs(repo, reproduced):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    runs = mlflow_runs(repo)
    for det, n in params["tune"]["n_trials"].items():
        best = json.loads((repo / f"results/tune/{det}.json").read_text())
        assert best["detector"] == det and 0 <= best["value"] <= 1
        assert set(params["detectors"][det]) <= set(best["params"])
        parent = runs[runs["tags.mlflow.runName"] == f"tune-{det}"]
        assert len(parent) == 1
        children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
        assert len(children) == n
        assert set(children["tags.state"]) <= {"complete", "pruned"}
        assert best["objective"] == params["objective"]["metric"]
        assert parent["metrics.best_val_objective"].iloc[0] == pytest.approx(best["value"])
        done = children[children["tags.state"] == "complete"]
        assert done["metrics.val_objective"].notna().all() and done["metrics.duration_s"].gt(0).all()
        assert done["metrics.val_physiological.false_alarms_per_hour"].notna().all()
    import mlflow

    parent_id = runs.loc[runs["tags.mlflow.runName"] == "tune-iforest", "run_id"].iloc[0]
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(parent_id, "plots")}
    assert "plots/optimization_history.png" in plots


def test_tune_resumes_a_study_without_losing_trials(repo, reproduced, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="biostream")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    n = params["tune"]["n_trials"]["iforest"]
    stage(repo, "tune", **TUNE_IFOREST, out=tmp_path / "again.json")
    assert f"{n} trials finished, 0 to go" in caplog.text
    params["tune"]["n_trials"]["iforest"] = n + 1
    caplog.clear()
    stage(repo, "tune", params, **TUNE_IFOREST, out=tmp_path / "more.json")
    assert f"{n} trials finished, 1 to go" in caplog.text
    assert json.loads((tmp_path / "more.json").read_text())["trials"] == n + 1


TUNE_IFOREST = {"detector": "iforest", "features": "data/features", **DATASETS,
                "search_space": "configs/search_spaces/iforest.yaml"}


def test_train_bundles_and_self_contained_mlflow_models(repo, reproduced):
    import mlflow

    from biostream.data.dataset import read_dataset
    from biostream.features import windows_at
    from biostream.models.bundle import ModelBundle

    index = json.loads((repo / "models/index.json").read_text())
    assert set(index) == {"clinical", "iforest", "ocsvm", "lstm_ae"}
    vitals = read_dataset(repo / "data/synthetic").vitals
    patient = vitals["patient_id"].iloc[-1]
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'stores/mlflow.db'}")
    for name, entry in index.items():
        bundle = ModelBundle.load(repo / "models" / name)
        assert bundle.detector.threshold_ == (entry["threshold"] if entry["threshold"] is not None else np.inf)
        assert (bundle.combination.rules is not None) == (name != "clinical"), "the learned models have the floor"
        windows = windows_at(vitals, bundle.pipeline.signals, bundle.pipeline.geometry.window_s,
                             np.array([patient] * 3), np.array([100, 2000, 2500]))
        expected = bundle.score(windows)
        model = mlflow.pyfunc.load_model(entry["model_uri"])
        got = model.predict(windows)
        np.testing.assert_allclose(got["score"].to_numpy(), expected, rtol=1e-6)
        assert (got["alarm"].to_numpy() == (expected > bundle.threshold)).all() and bundle.threshold == 0
        assert (got["technical"].to_numpy() == bundle.predict_frame(windows)["technical"].to_numpy()).all()
        assert model.metadata.signature is not None
    assert json.loads((repo / "models/index.json").read_text())["clinical"]["threshold"] == 0.0


def test_train_takes_the_studies_fitted_models_and_a_refit_gives_the_same_bundles(repo, reproduced, tmp_path):
    """The tune stage keeps its best trial's fitted detector and `train` uses it instead of fitting the same
    parameters again; without it (the best trial ran elsewhere) `train` fits them itself, to the same thresholds
    and validation metrics."""
    index = json.loads((repo / "models/index.json").read_text())
    runs = mlflow_runs(repo)
    for det in ("iforest", "ocsvm", "lstm_ae"):
        meta = json.loads((repo / f"results/tune/{det}.model/trial.json").read_text())
        assert meta["model"] and meta["params"] == json.loads((repo / f"results/tune/{det}.json").read_text())["params"]
        train_run = runs[runs["tags.mlflow.runName"] == f"train-{det}"].iloc[0]
        assert train_run["params.fitted_in"] == f"trial {meta['trial']} of study {meta['study']}"
        assert index[det]["fit_s"] == 0.0
    tuned = tmp_path / "tune"
    shutil.copytree(repo / "results/tune", tuned)
    for det in ("iforest", "ocsvm", "lstm_ae"):
        shutil.rmtree(tuned / f"{det}.model" / "detector")
        meta = json.loads((tuned / f"{det}.model/trial.json").read_text())
        (tuned / f"{det}.model/trial.json").write_text(json.dumps({**meta, "model": False, "note": "elsewhere"}))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'refit.db'}"
    params["tracking"]["artifact_root"] = str(tmp_path / "artifacts")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # a process of its own, as the stage's: the LSTM's refit is bit-identical in a fresh TensorFlow, not in one
    # that has trained other models already
    proc = run(repo, sys.executable, "-m", "pipelines.train", "--params", str(tmp_path / "params.yaml"),
               "--features", "data/features", *(a for k, v in DATASETS.items() for a in ("--" + k, v)),
               "--tuned", str(tuned), "--out", str(tmp_path / "models"), "--metrics", str(tmp_path / "train.json"))
    assert "fitting: elsewhere" in proc.stderr
    refit = json.loads((tmp_path / "models/index.json").read_text())
    assert all(refit[det]["fit_s"] > 0 for det in ("iforest", "ocsvm", "lstm_ae"))
    assert json.loads((tmp_path / "train.json").read_text()) == json.loads((repo / "metrics/train.json").read_text())


def test_evaluate_metrics_and_plots(repo, reproduced):
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(metrics) == {"clinical", "iforest", "ocsvm", "lstm_ae", "monitor", "map_alone", "advisory"}
    advisory = metrics.pop("advisory")  # every baseline advisory judged forward on every source (test_advisory.py)
    assert set(advisory) == set(metrics["clinical"])  # the same sources as the detectors
    for source, m in advisory.items():
        assert m["reference"] in m["candidates"], source
        assert m["candidates"]["map_below_73"]["all"]["events"] == m["candidates"]["current"]["all"]["events"]
    assert "map_below_73 |" in (repo / "plots/advisory.txt").read_text()
    for name, per in metrics.items():
        m = per["synthetic"]
        for key in ("event_recall", "event_precision", "event_f1", "false_alarms_per_hour", "median_delay_s",
                    "recall_by_kind", "events_by_kind"):
            assert key in m["physiological"] and key in m["technical"], key
        assert 0 <= m["physiological"]["weighted_f1"] <= 1 and "weighted_f1" not in m["technical"]
        for key in ("events", "recall", "alarms_per_hour", "auroc", "recall_by_kind"):
            assert key in m["rule_events"], key
        assert 0 <= m["point"]["auprc"] <= 1 and 0 <= m["point"]["auroc"] <= 1
        # never less safe than the bedside rules: every rule-defined event the rules catch, a floored model catches
        if name in ("iforest", "ocsvm", "lstm_ae"):
            rules = metrics["clinical"]["synthetic"]
            for kind, recall in rules["physiological"]["recall_by_kind"].items():
                assert m["physiological"]["recall_by_kind"][kind] >= recall, (name, kind)
            assert m["rule_events"]["recall"] >= rules["rule_events"]["recall"], name
        for fig in ("timeline", "scores", "confusion", "signals"):
            assert (repo / f"plots/figures/{name}_{fig}.png").stat().st_size > 5000, (name, fig)
        assert (repo / f"plots/roc/{name}.csv").is_file()
        assert (repo / f"plots/figures/{name}_shap.png").is_file() == (name in ("iforest", "ocsvm")), name
    assert (repo / "plots/figures/comparison.png").is_file()
    timing = json.loads((repo / "plots/timing.json").read_text())
    assert all(v["score_ms_per_window"] > 0 for v in timing.values())
    runs = mlflow_runs(repo)
    assert {"evaluate-iforest", "evaluate-comparison"} <= set(runs["tags.mlflow.runName"])
    run_id = runs.loc[runs["tags.mlflow.runName"] == "evaluate-ocsvm", "run_id"].iloc[0]
    logged = {a.path for a in registry(repo).list_artifacts(run_id, "plots")}
    assert {"plots/ocsvm_shap.png", "plots/ocsvm_signals.png", "plots/ocsvm_timeline.png"} <= logged


def test_vitaldb_cases_are_featurized_and_evaluated(repo, reproduced, tmp_path):
    """Real .vital files through ingest -> featurize -> evaluate with the trained bundles (the stages in process,
    on scratch outputs, so the DVC workspace above is untouched)."""
    local = tmp_path / "vital"
    local.mkdir()
    for f in (ROOT / "tests/fixtures/vital").glob("*.vital"):
        shutil.copy(f, local)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest_vitaldb"].update(sources=["local"], local_dir=str(local), cache_dir=str(tmp_path / "cache"))
    stage(repo, "ingest_vitaldb", params, out=tmp_path / "vitaldb", metrics=tmp_path / "vitaldb.json")
    scratch = {**DATASETS, "vitaldb": tmp_path / "vitaldb"}
    stage(repo, "featurize", params, **scratch, out=tmp_path / "features", metrics=tmp_path / "featurize.json")
    stage(repo, "evaluate", params, models="models", features=tmp_path / "features", **scratch,
          metrics=tmp_path / "evaluate.json", realism=tmp_path / "realism.json", plots=tmp_path / "plots",
          scores=tmp_path / "scores")
    metrics = json.loads((tmp_path / "evaluate.json").read_text())
    for name, per in metrics.items():
        assert "vitaldb" in per, name
        if name == "advisory":
            continue
        for cls in ("physiological", "technical"):  # the IntelliVue demo recordings hold no event
            assert per["vitaldb"][cls]["events"] == 0 and per["vitaldb"][cls]["false_alarms_per_hour"] is not None


def test_dvc_experiment_with_a_changed_param(repo, reproduced):
    """`dvc exp run -S` re-runs what the param feeds, and only that, and `dvc exp show` lists the metrics. The param
    is one that only register reads (an alarm param re-ran the three studies, a source evaluate too: minutes)."""
    ran = dvc(repo, "exp", "run", "-S", "register.lock_timeout_s=600", "--name", "longer-wait")
    out = ran.stdout + ran.stderr
    assert "Running stage 'register'" in out
    for earlier in ("generate", "featurize", "tune@", "train", "evaluate"):
        assert f"Running stage '{earlier}" not in out, earlier
    shown = dvc(repo, "exp", "show", "--json").stdout
    assert "longer-wait" in shown and "metrics/evaluate.json" in shown
    diff = dvc(repo, "params", "diff", "HEAD", "longer-wait").stdout
    assert "register.lock_timeout_s" in diff


# --- the model registry (register stage) -----------------------------------------------------------------

MODEL = "vitals-anomaly-detector"


def registry(repo: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'stores/mlflow.db'}")
    return mlflow.MlflowClient()


def register(repo: Path, out: Path, params: Path | None = None, wait: bool = True, models: Path | str = "models",
             evaluation: Path | str = "metrics/evaluate.json"):
    """The register stage on the copy's outputs: in this process (its decision), or, not waited for, as the command
    line in a process of its own (the Popen)."""
    paths = {"models": models, "features": "data/features", **DATASETS, "evaluation": evaluation, "out": out}
    if wait:
        return stage(repo, "register", params, **paths)
    cmd = [sys.executable, "-m", "pipelines.register", *(["--params", str(params)] if params else []),
           *(a for k, v in paths.items() for a in ("--" + k, str(v)))]
    return subprocess.Popen(cmd, cwd=repo, env=env_for(repo), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


PRIMARY = "physiological.weighted_f1"


def ranked(repo: Path) -> list[tuple[float, str]]:
    """Candidates by the primary metric on the test patients, best first, those that pass the safety floor first;
    ties in `register.candidates` order (as register breaks them)."""
    from biostream.core.config import Configs
    from biostream.tracking.registry import safety_check

    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    order = yaml.safe_load((repo / "params.yaml").read_text())["register"]["candidates"]
    kinds = [r.kind for r in Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml").rules]
    value = {n: evaluation[n]["synthetic"]["physiological"]["weighted_f1"] for n in order}
    safe = {n: safety_check(evaluation[n]["synthetic"], evaluation["clinical"]["synthetic"], kinds, 0.0,
                            "clinical").passed for n in order}
    return [(value[n], n) for n in sorted(order, key=lambda n: (not safe[n], -value[n], order.index(n)))]


def params_with(repo: Path, tmp_path: Path, **register_keys) -> Path:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["register"].update(register_keys)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_register_stage_leaves_one_champion_and_its_decision(repo, reproduced):
    """The pipeline's own register stage (it may have run more than once: `dvc exp run` re-runs it)."""
    decision = json.loads((repo / "results/register.json").read_text())
    client = registry(repo)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == decision["champion_after"]
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    assert str(challenger.version) == decision["challenger_version"]
    assert challenger.tags["decision_reason"] == decision["reason"]
    assert decision["detector"] == ranked(repo)[0][1]


def test_register_makes_the_best_detector_champion_with_a_model_card(repo, reproduced, tmp_path):
    name = "card-check"  # a registered model of its own: other tests and `dvc exp run` use the default one
    params = params_with(repo, tmp_path, model_name=name)
    register(repo, tmp_path / "first.json", params)
    decision = json.loads((tmp_path / "first.json").read_text())
    best_f1, best = ranked(repo)[0]
    assert decision["detector"] == best and decision["challenger_value"] == pytest.approx(best_f1, abs=1e-12)
    assert decision["promoted"] and decision["reason"] == "no champion yet" and decision["created"]
    client = registry(repo)
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == decision["champion_after"] == decision["challenger_version"]
    assert str(client.get_model_version_by_alias(name, "challenger").version) == str(champion.version)
    tags = champion.tags
    assert tags["detector"] == best and tags["decision"] == "promoted"
    assert len(tags["git_commit"].removesuffix("-dirty")) == 40
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    features_md5 = next(o["md5"] for o in lock["featurize"]["outs"] if o["path"] == "data/features")
    assert tags["dvc.data/features"] == features_md5
    assert float(tags[f"metric.{PRIMARY}"]) == pytest.approx(best_f1, rel=1e-5)
    assert tags["safety"] == "passed" and tags["safety.baseline"] == "clinical"
    assert "(baseline " in tags["safety.recall.hypotension"] and "(baseline " in tags["safety.false_alarms_per_hour"]
    assert decision["safety"]["passed"] and set(decision["safety"]["kinds"]) >= {"hypotension", "desaturation"}
    assert json.loads(tags["params.alarms"]) == yaml.safe_load((repo / "params.yaml").read_text())["alarms"]
    for text in (f"# {best}", "## Test metrics", "## Known limits", "## Safety floor (against clinical: passed)",
                 "| hypotension |", "| physiological |", "| technical |"):
        assert text in champion.description, text

    # idempotent: the same inputs again register nothing and keep the champion
    versions = client.search_model_versions(f"name='{name}'")
    register(repo, tmp_path / "again.json", params)
    again = json.loads((tmp_path / "again.json").read_text())
    assert not again["created"] and not again["promoted"] and "already the champion" in again["reason"]
    assert len(client.search_model_versions(f"name='{name}'")) == len(versions)


def test_a_worse_model_does_not_replace_the_champion(repo, reproduced, tmp_path):
    (best_f1, best), (worst_f1, worst) = ranked(repo)[0], ranked(repo)[-1]
    assert worst_f1 < best_f1, "the small profile's detectors must differ for this test to mean something"
    name = "worse-check"
    register(repo, tmp_path / "best.json", params_with(repo, tmp_path, model_name=name, candidates=[best]))
    client = registry(repo)
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    register(repo, tmp_path / "worse.json", params_with(repo, tmp_path, model_name=name, candidates=[worst]))
    decision = json.loads((tmp_path / "worse.json").read_text())
    assert decision["detector"] == worst and decision["created"] and not decision["promoted"]
    assert decision["challenger_value"] == pytest.approx(worst_f1, abs=1e-12)
    assert decision["champion_value"] == pytest.approx(best_f1, abs=1e-12), "the champion was re-scored"
    assert "does not beat" in decision["reason"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    challenger = client.get_model_version_by_alias(name, "challenger")
    assert str(challenger.version) == decision["challenger_version"] != champion
    assert challenger.tags["decision"] == "kept champion" and "does not beat" in challenger.tags["decision_reason"]


def test_a_champion_trained_on_other_windows_is_re_scored_on_its_own(repo, reproduced, tmp_path, monkeypatch):
    """After `featurize.window_s` changes, today's feature table describes other windows than the champion's:
    register must rebuild the champion's own features from the raw vitals, not scale the table's columns
    through its preprocessor (that mis-scored a 1,800-s champion as event F1 0.857 instead of 0.925)."""
    from dataclasses import replace

    from biostream.core.config import Configs
    from biostream.features.table import FeatureSet
    from biostream.models.objective import Objective
    from biostream.tracking.register import TestSet
    from biostream.tracking.registry import metric_at

    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    f1, det = max((evaluation[d]["synthetic"]["physiological"]["weighted_f1"], d) for d in ("iforest", "ocsvm"))
    name = "geometry-check"
    register(repo, tmp_path / "d.json", params_with(repo, tmp_path, model_name=name, candidates=[det]))
    registry(repo)  # the tracking URI of the copy's store
    monkeypatch.chdir(repo)  # artifact paths are relative to the project
    rules = Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml").rules
    objective = Objective.of(load_params(repo / "params.yaml").objective, rules)
    test = TestSet(FeatureSet.open(repo / "data/features", {"synthetic": repo / "data/synthetic"}), "synthetic",
                   objective)
    uri = f"models:/{name}@champion"
    assert metric_at(test.metrics(uri), PRIMARY) == pytest.approx(f1, abs=1e-12)
    # the same test seconds, as a table featurized with half the window would hold them (columns of no use to a
    # model trained on the full window: NaN here, imputed to the median if they were read)
    geometry = test.pipeline.geometry
    test.pipeline = replace(test.pipeline, geometry=replace(geometry, window_s=geometry.window_s // 2))
    feature_columns = [c for c in test.part.rows.columns if "__" in c]
    test.part.rows[feature_columns] = np.nan
    assert metric_at(test.metrics(uri), PRIMARY) == pytest.approx(f1, abs=1e-12)


def test_an_unsafe_model_is_never_champion_whatever_its_metric(repo, reproduced, tmp_path):
    """A model without the floor that alarms on nothing of its own misses the rule events the bedside catches: on a
    registered model without any champion (where any other challenger would be promoted) it is registered as
    challenger, tagged and described as failing the floor, and never becomes champion."""
    from biostream.core.config import Configs, load_yaml
    from biostream.features.table import FeatureSet
    from biostream.models.bundle import ModelBundle
    from biostream.models.floor import Combination
    from biostream.models.objective import Objective
    from biostream.reporting.evaluate import score_part

    bundle = ModelBundle.load(repo / "models/iforest")
    bundle.combination = Combination.plain()  # no floor: the rules no longer alarm through it
    bundle.detector.set_threshold(np.inf)  # and no alarm of its own
    models = tmp_path / "models"
    shutil.copytree(repo / "models", models)
    bundle.save(models / "unsafe")
    index = json.loads((models / "index.json").read_text())
    index["unsafe"] = {"threshold": None, "run_id": "not-in-this-store", "model_uri": ""}
    (models / "index.json").write_text(json.dumps(index))
    params = load_yaml(repo / "params.yaml")
    rules = Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml").rules
    part = FeatureSet.open(repo / "data/features", {"synthetic": repo / "data/synthetic"}).part("synthetic", "test")
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    objective = Objective.of(validate(params).objective, rules)
    evaluation["unsafe"] = {"synthetic": score_part(bundle, part, objective).metrics}
    assert evaluation["unsafe"]["synthetic"]["physiological"]["alarms"] == 0
    (tmp_path / "evaluate.json").write_text(json.dumps(evaluation, allow_nan=True))
    name = "unsafe-check"
    register(repo, tmp_path / "decision.json", params_with(repo, tmp_path, model_name=name, candidates=["unsafe"]),
             models=models, evaluation=tmp_path / "evaluate.json")
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["detector"] == "unsafe" and decision["created"] and not decision["promoted"]
    assert "fails the safety floor against clinical" in decision["reason"] and not decision["safety"]["passed"]
    assert not decision["candidates_safety"]["unsafe"]
    missed = [k for k, v in decision["safety"]["kinds"].items() if not v["ok"]]
    assert missed and all(decision["safety"]["kinds"][k]["challenger"] == 0.0 for k in missed)
    client = registry(repo)
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.tags["safety"] == "failed" and "FAILED" in version.description
    with pytest.raises(Exception, match="champion"):
        client.get_model_version_by_alias(name, "champion")
    # with the bedside rules among the candidates, the safe one is chosen instead
    register(repo, tmp_path / "decision.json", params_with(repo, tmp_path, model_name=name + "-2",
                                                           candidates=["unsafe", "clinical"]),
             models=models, evaluation=tmp_path / "evaluate.json")
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["detector"] == "clinical" and decision["promoted"]


def test_concurrent_registrations_leave_one_champion_the_better_one(repo, reproduced, tmp_path):
    """Two register runs at once on a new registered model, the worse and the better candidate: whatever the
    order, one champion, the better one."""
    (_, best), (_, worst) = ranked(repo)[0], ranked(repo)[-1]
    name = "concurrency-check"
    procs = []
    for det in (worst, best):
        folder = tmp_path / det
        folder.mkdir()
        procs.append(register(repo, folder / "decision.json", params_with(repo, folder, model_name=name,
                                                                          candidates=[det]), wait=False))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    decisions = {d: json.loads((tmp_path / d / "decision.json").read_text()) for d in (worst, best)}
    client = registry(repo)
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == 2
    champion = client.get_model_version_by_alias(name, "champion")
    assert str(champion.version) == decisions[best]["challenger_version"], decisions
    assert sum(d["promoted"] for d in decisions.values()) in (1, 2)
    aliases = [client.get_model_version(name, v.version).aliases for v in versions]
    assert sum("champion" in a for a in aliases) == 1 and sum("challenger" in a for a in aliases) == 1


def test_compare_runs_notebook_runs(repo, reproduced):
    outputs = execute_notebook(repo, "02_compare_runs.ipynb")
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, "the charts were drawn"
    text = "".join(o.get("text", "") for o in outputs)
    champion = registry(repo).get_model_version_by_alias(MODEL, "champion")
    assert f"champion: version {champion.version} ({champion.tags['detector']})" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    for det in ("clinical", "iforest", "ocsvm", "lstm_ae"):
        assert det in html, det


# --- seams that must not go stale ------------------------------------------------------------------------------


def test_an_edit_to_the_feature_kernel_invalidates_featurize_and_everything_after(repo, reproduced):
    kernel = repo / "src/biostream/features/kernel.py"
    original = kernel.read_text()
    kernel.write_text(original + "\n# an edit\n")
    try:
        changed = set(json.loads(dvc(repo, "status", "--json").stdout))
    finally:
        kernel.write_text(original)
    after = {"featurize", "tune@iforest", "tune@ocsvm", "tune@lstm_ae", "train", "evaluate", "register", "package"}
    assert changed == after, f"featurize and what follows it, nothing before: {changed}"
    assert "up to date" in dvc(repo, "status").stdout


def test_an_edit_to_a_detector_starts_a_new_study_and_a_rerun_resumes(repo, reproduced, tmp_path):
    """The stage's command line in the copy (in a process of its own: the copy's code, edited, is what it runs)."""
    best = json.loads((repo / "results/tune/iforest.json").read_text())
    cmd = [sys.executable, "-m", "pipelines.tune"] + [a for k, v in TUNE_IFOREST.items()
                                                     for a in ("--" + k.replace("_", "-"), v)]
    resumed = run(repo, *cmd, "--out", str(tmp_path / "same.json"))
    assert json.loads((tmp_path / "same.json").read_text())["study"] == best["study"]
    # the same study, nothing to run (an earlier test may have added a trial to it beyond the stage's n_trials)
    assert re.search(rf"study {best['study']}: \d+ trials finished, 0 to go", resumed.stderr), resumed.stderr[-2000:]
    detector = repo / "src/biostream/models/detectors/iforest.py"
    original = detector.read_text()
    assert original.startswith('"""')
    detector.write_text('"""Reworded: ' + original[3:] + "\n# a comment: neither changes what the code does\n")
    try:
        reworded = run(repo, *cmd, "--out", str(tmp_path / "reworded.json"))
        assert "0 to go" in reworded.stderr
        assert json.loads((tmp_path / "reworded.json").read_text())["study"] == best["study"]
        detector.write_text(original.replace("n_jobs=-1)", "n_jobs=1)"))  # the same trees, but other code
        edited = run(repo, *cmd, "--out", str(tmp_path / "edited.json"))
    finally:
        detector.write_text(original)
    new = json.loads((tmp_path / "edited.json").read_text())
    assert new["study"] != best["study"] and new["study"].startswith("iforest-")
    assert f"study {new['study']}: 0 trials finished, {best['trials']} to go" in edited.stderr
    assert new["params"] == best["params"] and new["value"] == pytest.approx(best["value"]), "same trees, same best"


def test_another_detectors_trial_count_does_not_rerun_a_study(repo, reproduced):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"]["n_trials"]["lstm_ae"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(dvc(repo, "status", "--json").stdout))
    finally:
        run(repo, "git", "checkout", "--", "params.yaml")
    assert "tune@lstm_ae" in changed and not changed & {"tune@iforest", "tune@ocsvm"}, changed


def test_models_restored_without_the_mlflow_store_still_register(repo, reproduced, tmp_path):
    """`models/` as DVC restores it, on a machine without the store the train stage logged to: register logs the
    bundle again and the registered model scores as `evaluate` said."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    params["tracking"]["artifact_root"] = str(tmp_path / "artifacts")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    register(repo, tmp_path / "decision.json", path)
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["created"] and decision["promoted"]
    assert any("is not in this store" in n for n in decision["notes"]), decision["notes"]
    best_f1, best = ranked(repo)[0]
    assert decision["detector"] == best and decision["challenger_value"] == pytest.approx(best_f1, abs=1e-12)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=params["tracking"]["uri"])
    version = client.get_model_version_by_alias(MODEL, "champion")
    run_ = client.get_run(version.run_id)
    assert run_.info.run_name == f"register-{best}"


def test_a_logged_model_needs_only_what_it_requires(repo, reproduced):
    """Load each logged model in an interpreter that can import only the distributions the model requires (and what
    they require in turn), as a fresh environment built from its requirements.txt would: every other third-party
    module is refused at import, so a missing requirement fails here, while an optional import that its
    library guards (pytest, from scikit-learn's test helpers) is skipped as it would be there. The model loads and
    scores."""
    import importlib.metadata

    from packaging.requirements import Requirement

    from biostream.tracking.requirements import canonical

    index = json.loads((repo / "models/index.json").read_text())
    script = textwrap.dedent("""
        import importlib.abc, importlib.metadata, json, sys
        allowed = set(json.loads(sys.argv[3]))
        provided = importlib.metadata.packages_distributions()
        canonical = lambda n: n.lower().replace("_", "-").replace(".", "-")
        refused = set()

        class OnlyRequired(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "biostream" or top not in provided:
                    return None
                if not {canonical(d) for d in provided[top]} & allowed:
                    refused.add(top)
                    raise ModuleNotFoundError(f"{top} is not in the model's requirements", name=name)
                return None

        sys.meta_path.insert(0, OnlyRequired())
        import numpy as np, mlflow
        mlflow.set_tracking_uri(sys.argv[1])
        model = mlflow.pyfunc.load_model(sys.argv[2])
        shape = model.metadata.get_input_schema().inputs[0].shape
        out = model.predict(np.full((2, shape[1], shape[2]), 80.0))
        assert len(out) == 2 and np.isfinite(out["score"]).all() and set(out) >= {"score", "alarm", "technical"}
        print(json.dumps(sorted(refused)))
        """)

    def needs(dist: str, seen: set[str]) -> set[str]:
        """`dist` and what it requires in this environment, transitively (markers evaluated, extras left out)."""
        if dist in seen:
            return seen
        seen.add(dist)
        for r in map(Requirement, importlib.metadata.requires(dist) or []):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                needs(canonical(r.name), seen)
        return seen

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'stores/mlflow.db'}")
    for name in ("iforest", "lstm_ae"):
        uri = index[name]["model_uri"]
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        required = [canonical(line.split("==")[0]) for line in (local / "requirements.txt").read_text().split()
                    if "==" in line]
        assert "numba" in required and "pyarrow" in required
        allowed: set[str] = set()
        for dist in required:
            needs(dist, allowed)
        proc = run(repo, sys.executable, "-c", script, f"sqlite:///{repo / 'stores/mlflow.db'}", uri,
                   json.dumps(sorted(allowed)))
        assert isinstance(json.loads(proc.stdout.strip().splitlines()[-1]), list)  # it ran to its last line
        assert "optuna" not in allowed and "bentoml" not in allowed, "only what the model's code needs"


def test_a_pipeline_that_learns_from_local_recordings_only(tmp_path_factory):
    """A copy told to learn from local recordings only (configs/profiles/recordings.yaml), its stages run in this
    process as dvc.yaml calls them (up to `register`: the bento is the session repro's business), on CSV and
    Parquet recordings written here as a monitor export would hold them (device track names or signal keys, with a
    time column or one row per second) and one bad file: the bad file is skipped and reported, the detectors learn
    and calibrate on the recordings' patients, and the registry decides on their test patients."""
    from biostream.core.config import Configs, load_yaml, merge_profile
    from biostream.sources.synthetic import Physiology
    from tests.conftest import make_dataset
    from tests.pipeline.conftest import copy_repo, dvc_stage, dvc_stages

    repo = copy_repo(tmp_path_factory.mktemp("recordings"), "configs/profiles/small.yaml",
                     "configs/profiles/recordings.yaml")
    configs = Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml")
    params = merge_profile(load_yaml(repo / "params.yaml"), {"generate": {"seed": 99, "n_patients": 10,
                                                                          "nibp_fraction": 0.0}})
    ds = make_dataset(params, configs, Physiology.from_yaml(repo / "configs/synthetic.yaml"))
    folder = repo / "data/external/recordings"
    tracks = {"hr": "Solar8000/HR", "map": "Solar8000/ART_MBP", "sbp": "Solar8000/ART_SBP"}
    for i, (pid, rec) in enumerate(ds.vitals.groupby("patient_id")):
        export = rec[list(configs.signals.keys)].rename(columns=tracks if i % 2 else {})
        if i % 3 == 0:
            export.to_parquet(folder / f"bed-{pid}.parquet", index=False)
        else:
            export.insert(0, "time", pd.Timestamp("2026-11-21T08:00:00Z") + pd.to_timedelta(rec["time_s"], "s"))
            export.to_csv(folder / f"bed-{pid}.csv", index=False)
    (folder / "broken.csv").write_text("time,hr\n2026-11-21T08:00:00Z,72\nnot a time,73\n")
    stages = list(dvc_stages(repo))
    for name in stages[:stages.index("register") + 1]:
        dvc_stage(repo, name)
    manifest = json.loads((repo / "metrics/recordings.json").read_text())
    assert manifest["cases"] == 10 and manifest["failed_cases"] == 1
    error = manifest["failures"][0]["error"]
    assert "broken.csv" in error and "row 3, column 'time'" in error
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    for name in ("clinical", "iforest", "ocsvm", "lstm_ae"):
        assert set(evaluation[name]) == {"recordings", "synthetic"}, name
        assert evaluation[name]["recordings"]["physiological"]["events"] > 0
    tuned = json.loads((repo / "results/tune/ocsvm.json").read_text())
    assert tuned["trials"] == yaml.safe_load((repo / "params.yaml").read_text())["tune"]["n_trials"]["ocsvm"]
    decision = json.loads((repo / "results/register.json").read_text())
    assert decision["promoted"] and decision["safety"]["passed"]
    chosen = evaluation[decision["detector"]]["recordings"]["physiological"]["weighted_f1"]
    assert decision["challenger_value"] == pytest.approx(chosen, abs=1e-12)
    train_rows = pd.read_parquet(repo / "data/features/recordings.parquet")
    assert set(train_rows["patient_id"].str.slice(0, 4)) == {"rec-"}
