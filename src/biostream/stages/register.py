"""Stage `register`: the best evaluated detector into the MLflow model registry, champion only if better and safe.

What it decides and how: `biostream.tracking.register`. The decision goes to `out` and to the version's tags.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biostream.core.config import Configs
from biostream.core.io import write_json
from biostream.core.mlflow_store import setup_tracking
from biostream.core.params import Params
from biostream.features.table import FeatureSet
from biostream.models.objective import Objective
from biostream.stages import Datasets, StageError, help_of
from biostream.tracking.lock import lock_target
from biostream.tracking.register import TestSet, register

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths(Datasets):
    models: Path = field(metadata=help_of("the train stage's folder (bundles and index.json)"))
    features: Path = field(metadata=help_of("the featurize stage's output folder"))
    evaluation: Path = field(metadata=help_of("the evaluate stage's metrics JSON"))
    out: Path = field(metadata=help_of("the decision, as JSON"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Register the best safe candidate (champion only if better); write and return the decision."""
    rp = params.register_
    tracking = params.tracking
    lock_target(tracking.uri, rp.lock_url, paths.out)  # a lock that cannot hold across machines fails here
    setup_tracking(tracking)
    configs = Configs.load(paths.signals, paths.alarms)
    features = FeatureSet.open(paths.features, paths.datasets())
    objective = Objective.of(params.objective, configs.rules)
    test = TestSet(features, rp.source, objective)
    learned_from = params.sources.train  # their test patients were evaluated; others whole
    real = {src: TestSet(features, src, objective, "test" if src in learned_from else None)
            for src in rp.real_sources if features.has_rows(src)}
    evaluation = json.loads(paths.evaluation.read_text())
    try:
        decision = register(rp, tracking, params.to_dict(), paths.models, evaluation, test, paths.out,
                            [r.kind for r in configs.rules], real)
    except (RuntimeError, KeyError) as exc:
        raise StageError(str(exc)) from None
    write_json(decision.to_dict(), paths.out)
    log.info("%s: %s (%s); champion is version %s", rp.model_name, "promoted" if decision.promoted else "kept",
             decision.reason, decision.champion_after)
    return decision.to_dict()
