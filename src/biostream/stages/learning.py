"""What `tune` and `train` both start from (one set-up, not two copies): the configs, the floor every learned
detector keeps, MLflow's store, and the training sources' normal training rows and validation rows, with the floor's
view of the validation seconds built once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from biostream.core.config import Configs
from biostream.core.mlflow_store import setup_tracking
from biostream.core.params import Params
from biostream.features.pipeline import InputPipeline
from biostream.features.table import FeatureSet, Part
from biostream.models.floor import Combination
from biostream.models.technical import TechnicalChecks
from biostream.models.training import Validation, floor_template, validation_of
from biostream.stages import Datasets, StageError, help_of


@dataclass(frozen=True, kw_only=True)
class LearningPaths(Datasets):
    """The files `tune` and `train` both read."""

    features: Path = field(metadata=help_of("the featurize stage's output folder"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")
    technical: Path = Path("configs/technical.yaml")


@dataclass(frozen=True)
class Learning:
    configs: Configs
    floor: Combination  # the floor template (rules and technical checks) of every learned detector
    features: FeatureSet
    train: Part  # the normal training rows of `params.sources.train`
    val: Part  # their validation rows
    validation: Validation  # `val` with the floor's view of its seconds

    @property
    def pipeline(self) -> InputPipeline:
        return self.features.pipeline


def learning(params: Params, paths: LearningPaths, stage: str) -> Learning:
    """Load and check what a learning stage (`stage`, for messages) starts from; MLflow's store is set up."""
    configs = Configs.load(paths.signals, paths.alarms)
    floor = floor_template(configs, params.safety, TechnicalChecks.from_yaml(paths.technical))
    setup_tracking(params.tracking)
    sources = params.sources.train
    features = FeatureSet.open(paths.features, paths.datasets())
    train, val = features.parts(sources, "train", normal_only=True), features.parts(sources, "val")
    if not len(train.rows) or not len(val.rows):
        raise StageError(f"{stage}: the training sources ({', '.join(sources)}) have no training or no validation "
                         "patients; add recordings or change params.yaml: sources.train")
    return Learning(configs, floor, features, train, val, validation_of(val, floor, features.pipeline))
