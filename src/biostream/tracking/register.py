"""The `register` stage's work: the best evaluated detector into the MLflow model registry, `champion` only if
better (the pure decisions are `biostream.tracking.registry`'s; the procedure: docs/studies-and-registry.md).

Serialised by the registry lock (`biostream.tracking.lock`: a file beside an embedded sqlite store, a PostgreSQL
advisory lock for a shared store or server). The model registered is the train stage's logged model when this store
holds its run, else the bundle in `models/<detector>/` logged again (`logged_model`): `models/` as DVC restores it is
enough, without the MLflow store it was first logged to.
"""

from __future__ import annotations

import json
import logging
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from biostream.core.mlflow_store import TrackingParams
from biostream.features import windows_at
from biostream.features.table import FeatureSet
from biostream.models.bundle import ModelBundle
from biostream.models.floor import Outputs
from biostream.models.forward import choose_advisory
from biostream.models.metrics import evaluate_scores
from biostream.models.objective import Objective
from biostream.tracking.lock import registry_lock
from biostream.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    Decision,
    RegisterParams,
    Safety,
    choose,
    decide,
    fingerprint,
    fmt,
    lookup,
    metric_at,
    model_card,
    real_check,
    real_failures,
    real_figures,
    safety_check,
)

log = logging.getLogger("biostream.register")

LIMITS = (
    "Trained and calibrated on a synthetic cohort; judged also on real recordings (the table above): real "
    "monitoring brings artefacts, noise and patients the synthetic world only approximates.",
    "Statistical anomalies of one signal (slow drift, level shift, frozen value, noise burst, spikes shorter "
    "than the alarm's k-of-n delay) are caught less reliably than clinical episodes.",
)
TAGGED_METRICS = ("physiological.weighted_f1", "physiological.event_f1", "physiological.event_recall",
                  "physiological.event_precision", "physiological.false_alarms_per_hour", "technical.event_f1",
                  "technical.false_alarms_per_hour", "rule_events.recall", "rule_events.alarms_per_hour",
                  "rule_events.auroc", "point.auroc", "point.auprc")
CHUNK = 512  # raw windows scored at once when a champion's own features must be rebuilt


class TestSet:
    """Today's test patients of a source (`FeatureSet.part`; `split` None: every patient, as a source only evaluated
    on), and how a registered model scores on them."""

    def __init__(self, features: FeatureSet, source: str, objective: Objective, split: str | None = "test") -> None:
        self.pipeline = features.pipeline  # what the table's feature columns describe
        self.part = features.part(source, split)
        self.objective = objective

    def describe(self, evaluation: Mapping[str, Any]) -> dict[str, Any]:
        vitals = self.part.vitals
        hours = vitals.groupby("patient_id").size() / 3600.0
        return {"patients": int(len(hours)), "hours": round(float(hours.sum()), 1),
                "test_patients": int(self.part.rows["patient_id"].nunique()),
                "vitaldb_cases": "yes (see metrics/evaluate.json)" if evaluation.get("vitaldb") else "none"}

    def example(self) -> np.ndarray:
        """One test window, the input example of a model logged here."""
        row = self.part.rows.iloc[[len(self.part.rows) // 2]]
        return windows_at(self.part.vitals, self.pipeline.signals, self.pipeline.geometry.window_s,
                          row["patient_id"].to_numpy(), row["time_s"].to_numpy())

    def metrics(self, model_uri: str) -> dict[str, Any]:
        """Load a registered model and score it on these patients with today's code, as `evaluate` does."""
        import mlflow.pyfunc

        with warnings.catch_warnings():  # MLflow asks for type hints, which tensor signatures cannot use
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            bundle = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().bundle
        return self.bundle_metrics(bundle, model_uri)

    def bundle_metrics(self, bundle: ModelBundle, name: str = "the bundle") -> dict[str, Any]:
        """A bundle's metrics on these patients, as `evaluate` scores them (`metrics` of a loaded model)."""
        from biostream.features import feature_names

        want = len(feature_names(bundle.pipeline.signals))
        have = len(bundle.pipeline.preprocessor.feature_median)
        if have != want:
            raise ValueError(f"{name} was trained on {have} features; today's feature pipeline makes {want}")
        pipe, part = bundle.pipeline, self.part
        table = self.pipeline
        view = bundle.detector.input_view
        if (view == "features" and (pipe.geometry, pipe.signals) != (table.geometry, table.signals)) or (
                view != "window" and pipe.readiness != table.readiness):
            # a champion trained on other windows (featurize.window_s or min_history_s changed since): the table's
            # features and signals read describe today's windows, not its own, so score its own windows rebuilt
            # from the raw vitals
            rows = part.rows
            outputs = Outputs.concat([bundle.outputs(windows_at(
                part.vitals, pipe.signals, bundle.window_s, rows["patient_id"].to_numpy()[i : i + CHUNK],
                rows["time_s"].to_numpy()[i : i + CHUNK])) for i in range(0, len(rows), CHUNK)])
        else:
            outputs = bundle.outputs_of_rows(part.rows, part.vitals)
        if bundle.detector.calibrated is False:  # the rules' own bundle: its score is the rules'
            outputs = replace(outputs, rules=outputs.score)
        return evaluate_scores(part.rows, part.events, outputs, bundle.threshold, bundle.policy, self.objective,
                               part.rule_events)[0]


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def dvc_hashes(lock: Path = Path("dvc.lock")) -> dict[str, str]:
    """md5 of the data and model outputs as dvc.lock records them (what this version was built from)."""
    if not lock.is_file():
        return {}
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    out = {}
    for stage in ("generate", "featurize", "train"):
        for o in stages.get(stage, {}).get("outs", []):
            if "md5" in o:
                out[f"dvc.{o['path']}"] = o["md5"]
    return out


def logged_model(client: Any, entry: Mapping[str, Any], bundle_dir: Path, detector: str,
                 test: TestSet) -> tuple[str, str, list[str]]:
    """(model URI, run id, notes) of the bundle to register: the train stage's logged model when this store holds
    its run, else the bundle logged now in a `register-<detector>` run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from biostream.tracking.pyfunc import log_bundle

    try:
        client.get_run(entry["run_id"])
        return entry["model_uri"], entry["run_id"], []
    except (MlflowException, KeyError):
        pass
    with mlflow.start_run(run_name=f"register-{detector}", tags={"stage": "register", "detector": detector}) as run:
        uri = log_bundle(bundle_dir, detector, test.example())
    return uri, run.info.run_id, [f"the train run {entry.get('run_id')} is not in this store: the bundle in "
                                  f"{bundle_dir} was logged again (run {run.info.run_id})"]


def register(rp: RegisterParams, tracking: TrackingParams, params: Mapping[str, Any], models: Path,
             evaluation: Mapping[str, Any], test: TestSet, out: Path, clinical_kinds: Sequence[str],
             real: Mapping[str, TestSet] | None = None) -> Decision:
    """Register the best candidate and decide on the champion; returns the decision. `real`: per real source, every
    patient (the current champion is re-scored there: one over the budget is replaced).

    Picks the candidate with the best primary metric (`objective.metric`) on the test patients of `register.source`
    among those that pass the safety floor against the bedside rules (`register.safety`), registers its logged model
    under `register.model_name` (an existing version made from the same bundle and metrics is reused: no new
    version), sets the alias `challenger` on it, re-scores it and the current `champion` from the registry on
    today's test patients, and moves `champion` only if the challenger passes the floor and is strictly better (by
    more than `register.min_improvement`). The decision, each candidate's safety and its reasons go to the version's
    tags; the version's description is its model card."""
    from mlflow import MlflowClient

    if rp.baseline not in evaluation:
        raise KeyError(f"register.safety.baseline '{rp.baseline}' has no metrics in the evaluation; evaluated: "
                       f"{sorted(evaluation)}")
    baseline = evaluation[rp.baseline][rp.source]
    figures = {c: real_figures(evaluation, c, rp) for c in rp.candidates if c in evaluation}
    checks = {c: safety_check(evaluation[c][rp.source], baseline, clinical_kinds, rp.margin, rp.baseline, figures[c])
              for c in rp.candidates if c in evaluation}
    metric = test.objective.metric  # params.yaml: objective.metric
    detector, value = choose(evaluation, rp.candidates, metric, rp.source,
                             safe={c: check.passed for c, check in checks.items()})
    advisory = advisory_choice(evaluation, rp.advisory_source)
    log.info("advisory: %s (%s)", advisory["source"], advisory["why"])
    fp = fingerprint(models / detector, detector, evaluation[detector])
    log.info("candidate: %s (%s %.4f on the test patients; safety floor %s)", detector, metric, value,
             "passed" if checks[detector].passed else "FAILED: " + "; ".join(checks[detector].failures()))

    with registry_lock(tracking.uri, rp.lock_url, rp.model_name, out, rp.lock_timeout_s):
        client = MlflowClient()
        version, created, notes = _challenger(client, rp, params, models, evaluation[detector][rp.source], detector,
                                              fp, test)
        rescored = test.metrics(f"models:/{rp.model_name}/{version}")
        challenger_value = metric_at(rescored, metric)
        if not np.isclose(challenger_value, value, rtol=0, atol=1e-9):
            raise RuntimeError(f"version {version} re-scores {challenger_value} on the test patients but `evaluate` "
                               f"reported {value}: the registry does not hold the evaluated model")
        safety = safety_check(rescored, baseline, clinical_kinds, rp.margin, rp.baseline, figures[detector])
        client.update_model_version(rp.model_name, version, description=model_card(
            detector, rescored, params["alarms"], test.describe(evaluation[detector]), LIMITS, safety,
            (advisory, evaluation.get("advisory", {}).get(rp.advisory_source, {}))))
        promote, reason, champion_before, champion_value = _against_champion(
            client, rp, version, challenger_value, safety, test, evaluation, real or {})
        if promote:
            client.set_registered_model_alias(rp.model_name, CHAMPION, version)
        decision = Decision(rp.model_name, detector, version, created, champion_before,
                            version if promote else str(champion_before), promote, reason, metric,
                            challenger_value, champion_value, fp, safety.to_dict(),
                            {c: check.passed for c, check in checks.items()}, notes, figures, advisory)
        for key, val in {"decision": "promoted" if promote else "kept champion", "decision_reason": reason,
                         "decision_champion_before": str(champion_before),
                         "decision_champion_value": str(champion_value), **safety_tags(safety),
                         "advisory_source": str(advisory["source"]), "advisory_why": advisory["why"][:4000]}.items():
            client.set_model_version_tag(rp.model_name, version, key, val)
    return decision


def advisory_choice(evaluation: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`choose_advisory` on `source`'s advisory metrics of the evaluation (none evaluated there: no advisory)."""
    metrics = evaluation.get("advisory", {}).get(source)
    if not metrics:
        return {"source": None, "type": None, "decided_on": source, "baseline": None,
                "why": f"no advisory was evaluated on {source} (metrics/evaluate.json: advisory); none is served"}
    return choose_advisory(source, metrics, metrics["budget"])


def _challenger(client: Any, rp: RegisterParams, params: Mapping[str, Any], models: Path, metrics: Mapping[str, Any],
                detector: str, fp: str, test: TestSet) -> tuple[str, bool, list[str]]:
    """The candidate as a version of the registered model, aliased `challenger`: a new version, or the one that
    already holds the same bundle and metrics (`fp`). (version, whether it was created, notes)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(rp.model_name, description="BioStream vital-sign anomaly detector: "
                                       "`champion` serves, `challenger` is the newest candidate.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    same = [v for v in client.search_model_versions(f"name='{rp.model_name}'") if v.tags.get("fingerprint") == fp]
    notes: list[str] = []
    if same:
        version = str(max(int(v.version) for v in same))
        notes.append(f"version {version} was already registered from the same bundle and metrics")
        log.info("%s version %s already holds this bundle and these metrics: nothing registered", rp.model_name,
                 version)
    else:
        entry = json.loads((models / "index.json").read_text())[detector]
        model_uri, run_id, logged_notes = logged_model(client, entry, models / detector, detector, test)
        notes += logged_notes
        tags = {"detector": detector, "fingerprint": fp, "git_commit": git_commit(), **dvc_hashes(),
                "params.alarms": json.dumps(params["alarms"], sort_keys=True),
                "params.safety": json.dumps(params["safety"], sort_keys=True),
                "params.threshold": json.dumps(params["threshold"], sort_keys=True),
                "detector_threshold": f"{entry['threshold']:.10g}" if entry["threshold"] is not None else "inf",
                "train_run_id": run_id,
                **{f"metric.{k}": fmt(lookup(metrics, k), ".6g") for k in TAGGED_METRICS}}
        version = str(mlflow.register_model(model_uri, rp.model_name, tags=tags).version)
        log.info("registered %s version %s", rp.model_name, version)
    client.set_registered_model_alias(rp.model_name, CHALLENGER, version)
    return version, not same, notes


def _against_champion(client: Any, rp: RegisterParams, version: str, challenger_value: float, safety: Any,
                      test: TestSet, evaluation: Mapping[str, Any],
                      real: Mapping[str, TestSet]) -> tuple[bool, str, str | None, float | None]:
    """Whether the challenger becomes champion, and why: (promote, reason, the champion's version before, its value
    re-scored on today's test patients)."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(rp.model_name, CHAMPION)
    except MlflowException:
        champion = None
    champion_before = str(champion.version) if champion else None
    if champion is not None and champion_before == version:
        return False, f"version {version} is already the champion", champion_before, challenger_value
    if not safety.passed:
        return (*decide(challenger_value, None, rp.min_improvement, safety), champion_before, None)
    champion_value: float | None = None
    try:
        over: list[str] = []
        if champion is not None:
            champion_uri = f"models:/{rp.model_name}/{champion_before}"
            champion_value = metric_at(test.metrics(champion_uri), test.objective.metric)
            over = champion_over_budget(champion_uri, real, evaluation, rp)
        promote, reason = decide(challenger_value, champion_value, rp.min_improvement, safety)
        if champion is not None and over and not promote:
            promote, reason = True, (f"champion version {champion_before} fails on real recordings "
                                     f"({'; '.join(over)}); the challenger, which passes, replaces it")
    except (ValueError, KeyError, OSError, MlflowException) as exc:
        promote = False
        reason = (f"champion version {champion_before} cannot be re-scored on today's test patients ({exc}); kept. "
                  "Review and move the alias by hand if the challenger should serve.")
    return promote, reason, champion_before, champion_value


def champion_over_budget(uri: str, real: Mapping[str, TestSet], evaluation: Mapping[str, Any],
                         rp: RegisterParams) -> list[str]:
    """What the current champion, re-scored on every patient of each real source with today's code, fails there
    (own alarms over the budget, fewer rule events caught than the floor alone); empty: it passes."""
    return [m for src, recordings in real.items() if src in evaluation.get(rp.baseline, {})
            for m in real_failures(src, real_check(recordings.metrics(uri), evaluation[rp.baseline][src],
                                                   rp.max_own_alarms_per_hour))]


def safety_tags(safety: Safety) -> dict[str, str]:
    """The safety floor as version tags: per clinical kind both recalls, the false alarms, the real recordings'
    figures, the verdict."""
    tags = {"safety": "passed" if safety.passed else "failed", "safety.baseline": safety.baseline}
    for src, r in safety.real.items():
        tags[f"real.{src}.own_alarms_per_hour"] = (f"{fmt(r['own_alarms_per_hour'], '.3f')} (budget "
                                                   f"{fmt(r['budget'], '.3f')})")
        tags[f"real.{src}.alarms_per_hour"] = (f"{fmt(r['alarms_per_hour'], '.3f')} (floor alone "
                                               f"{fmt(r['baseline_alarms_per_hour'], '.3f')})")
        tags[f"real.{src}.rule_events_recall"] = (f"{fmt(r['rule_events_recall'])} (floor alone "
                                                  f"{fmt(r['baseline_rule_events_recall'])})")
        tags[f"real.{src}.early_warning_auroc"] = fmt(r["early_warning_auroc"])
    for kind, v in safety.kinds.items():
        tags[f"safety.recall.{kind}"] = f"{fmt(v['challenger'])} (baseline {fmt(v['baseline'])})"
    fa = safety.false_alarms_per_hour
    tags["safety.false_alarms_per_hour"] = f"{fmt(fa['challenger'], '.3f')} (baseline {fmt(fa['baseline'], '.3f')})"
    return tags
