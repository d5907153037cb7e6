"""A tiny cohort with features, an input pipeline and fitted detectors, shared by the model tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from biostream.config import Configs, merge_profile
from biostream.dataset import Dataset
from biostream.detectors import REGISTRY, BaseDetector, make_detector
from biostream.detectors.clinical import clinical_params
from biostream.features import (
    FeaturizeParams,
    InputPipeline,
    Preprocessor,
    feature_min_scale,
    feature_names,
    featurize,
)
from tests.conftest import make_dataset

CLINICAL = ("hypotension", "tachycardia", "bradycardia", "desaturation", "hypercapnia", "fever")

# Small but quick settings for the tests; defaults otherwise.
TEST_PARAMS = {"lstm_ae": {"epochs": 5, "max_windows": 4000}}


def detector_params(name: str, configs: Configs) -> dict:
    if name == "clinical":
        return clinical_params(configs)
    return dict(TEST_PARAMS.get(name, {}))


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
    fp = FeaturizeParams.from_params(params)
    table = featurize(ds.vitals, configs.signals.keys, fp)
    names = feature_names(configs.signals.keys)
    train = table[table["split"] == "train"]
    raw_train = ds.vitals.loc[ds.vitals["split"] == "train", list(configs.signals.keys)].to_numpy()
    pre = Preprocessor.fit(train[names].to_numpy(), raw_train, feature_min_scale(configs.signals.keys, fp.geometry),
                           normal=((train["label"] == 0) & (train["artefact"] == 0)).to_numpy())
    pipeline = InputPipeline(configs.signals.keys, fp.geometry, pre)
    normal = train[(train["label"] == 0) & (train["artefact"] == 0)]
    return ModelData(ds, table, pipeline, normal, table[table["split"] != "train"])


@pytest.fixture(scope="session")
def fitted(model_data, configs) -> dict[str, BaseDetector]:
    out = {}
    for name in sorted(REGISTRY):
        det = make_detector(name, **detector_params(name, configs))
        out[name] = det.fit(model_data.view(det, model_data.train))
    return out
