"""A tiny cohort with features, an input pipeline and fitted detectors, shared by the model tests."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import Configs, merge_profile
from biostream.core.params import section, validate
from biostream.data.dataset import Dataset, read_dataset
from biostream.features import (
    InputPipeline,
    featurize,
)
from biostream.features.preprocess import fit_on_training
from biostream.features.readiness import Readiness, learned_defined
from biostream.models.alarms import AlarmPolicy
from biostream.models.bundle import ModelBundle
from biostream.models.detectors import NAMES, BaseDetector, detector_class, make_detector
from biostream.models.floor import SafetyParams
from biostream.models.technical import TechnicalChecks
from biostream.models.training import combination_for, floor_template
from biostream.serving import Scorer, ServeParams, ServingSpec
from pipelines import ingest_recordings
from tests.conftest import ROOT, make_dataset

CLINICAL = ("hypotension", "tachycardia", "bradycardia", "desaturation", "hypercapnia", "fever")

# Small but quick settings for the tests; defaults otherwise.
TEST_PARAMS = {"lstm_ae": {"epochs": 5, "max_windows": 4000}}


def detector_params(name: str, configs: Configs) -> dict:
    cls = detector_class(name)
    return cls.training_params(TEST_PARAMS.get(name, {}) if cls.tunable else None, configs)


@dataclass
class ModelData:
    dataset: Dataset
    table: pd.DataFrame
    pipeline: InputPipeline
    train: pd.DataFrame  # normal training rows
    evaluation: pd.DataFrame  # validation and test rows

    def view(self, det: BaseDetector, rows: pd.DataFrame) -> np.ndarray:
        return self.pipeline.view_of_rows(det.input_view, rows, self.dataset.vitals)


@pytest.fixture(scope="session")
def model_data(small_params, configs, physiology) -> ModelData:
    params = merge_profile(small_params, {"generate": {"n_patients": 24, "anomalies_per_hour": 3.0}})
    ds = make_dataset(params, configs, physiology)
    fp = validate(params).featurize
    table = featurize(ds.vitals, configs.signals.keys, fp)
    pre = fit_on_training(table, ds.vitals, configs.signals.keys, fp.geometry)
    train = table[table["split"] == "train"]
    pipeline = InputPipeline(configs.signals.keys, fp.geometry, pre, Readiness.of(fp))
    normal = train[(train["label"] == 0) & (train["artefact"] == 0) & learned_defined(train)]
    return ModelData(ds, table, pipeline, normal, table[table["split"] != "train"])


@pytest.fixture(scope="session")
def fitted(model_data, configs) -> dict[str, BaseDetector]:
    out = {}
    for name in NAMES:
        det = make_detector(name, **detector_params(name, configs))
        out[name] = det.fit(model_data.view(det, model_data.train))
    return out


@pytest.fixture(scope="session")
def rows(model_data) -> pd.DataFrame:
    """Six anomalous and six normal validation or test seconds, each with a whole window of history."""
    ev = model_data.evaluation
    ev = ev[ev["time_s"] >= model_data.pipeline.geometry.window_s]
    return pd.concat([ev[ev["label"] == 1].sample(6, random_state=1), ev[ev["label"] == 0].sample(6, random_state=2)])


# The serving layer, as a bento carries it: small limits, so that the tests can reach them
SERVE = {"serve": {"bentoml_home": "bentoml_home", "max_batch_windows": 8, "max_window_s": 2400,
                   "max_series_s": 5000, "max_missing_fraction": 0.9, "max_latency_ms": 5, "top_signals": 3,
                   "workers": 1, "max_body_mb": 1, "max_concurrency": 64,
                   "worker_memory_mb": 4096}}
POLICY = AlarmPolicy(k=3, n=5, refractory_s=120, tolerance_s=30)


def scorer_for(det: BaseDetector, model_data: ModelData, configs: Configs) -> Scorer:
    """What the service answers with for a fitted detector (its bundle with the floor and technical checks, as
    `train` makes it, and its serving spec)."""
    checks = TechnicalChecks.from_yaml(ROOT / "configs/technical.yaml")
    floor = floor_template(configs, SafetyParams(True, True, 1.0), checks)
    bundle = ModelBundle(model_data.pipeline, det, POLICY, combination_for(det, floor))
    spec = ServingSpec.build(bundle, configs.signals, section(ServeParams, SERVE["serve"]), model_name="m",
                             model_version="3", model_alias="champion", model_uri="models:/m/3",
                             metrics={"events.event_f1": 0.5}, stream=None)
    assert ServingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # what the bento model stores
    return Scorer(bundle, spec)


def window_payload(window: np.ndarray, signals, pid="bed-1", time="2026-11-21T10:00:00Z") -> dict:
    """A request body for one (S, W) window; seconds before the recording began (missing in every signal, at
    the start) are not sent, as a gateway has no history before the patient was connected."""
    recorded = ~np.isnan(window).all(axis=0)
    first = int(np.argmax(recorded)) if recorded.any() else 0
    return {"patient_id": pid, "time": time,
            "vitals": {s: [None if math.isnan(v) else float(v) for v in window[i, first:]]
                       for i, s in enumerate(signals)}}


@pytest.fixture(scope="module")
def alarming(fitted, model_data, configs):
    """The iforest's scorer and the first 1,500 s of the evaluation patient with the most seconds above threshold
    (S, T), with what score_series answers for it."""
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    vitals, table = model_data.dataset.vitals, model_data.evaluation
    length = 1500
    firsts = table[table["time_s"] < length]
    stored = scorer.bundle.outputs_of_rows(firsts.reset_index(drop=True), vitals).score
    above = pd.Series(stored > scorer.threshold).groupby(firsts["patient_id"].to_numpy()).sum()
    pid = above.idxmax()
    rec = vitals[vitals["patient_id"] == pid]
    values = rec[list(scorer.spec.signals)].to_numpy()[:length].T.astype(np.float64)
    return scorer, str(pid), values


@pytest.fixture(scope="session")
def real(tmp_path_factory) -> Dataset:
    """The real recordings of ../shared/fixtures/real (29 patients, 58.8 h), as the ingest_recordings stage makes
    them."""
    out = tmp_path_factory.mktemp("real") / "real"
    assert ingest_recordings.main(["--dataset", "real", "--out", str(out), "--metrics",
                                   str(out.parent / "real.json")]) == 0
    return read_dataset(out)
