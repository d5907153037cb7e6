"""Stage `tune@<detector>`: an Optuna study of one detector on the validation patients.

The study (`biostream.tuning.study`) resumes when nothing it depends on changed, code included, and starts afresh
otherwise; MLflow gets a parent run per study with a child run per trial. With `tune.workers` > 1 (and a database
server as `tune.storage`) the stage starts that many processes in all; `join` adds a worker to the running study
(from this or another machine). `model` keeps the best trial's fitted detector, which `train` then uses instead of
fitting the same parameters again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biostream.core.io import write_json
from biostream.core.params import Params
from biostream.models.detectors import NAMES, detector_class
from biostream.models.objective import Objective
from biostream.stages import StageError, help_of
from biostream.stages.learning import LearningPaths, learning
from biostream.tuning.space import SearchSpace
from biostream.tuning.study import StudyInputs, join_study, run_study

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths(LearningPaths):
    detector: str = field(metadata={"choices": NAMES, "help": "the detector whose study this is"})
    search_space: Path
    out: Path = field(metadata=help_of("best params JSON"))
    model: Path | None = field(default=None, metadata=help_of(
        "folder for the best trial's fitted detector (train reuses it instead of fitting again)"))
    join: bool = field(default=False, metadata=help_of(
        "join the study as one more worker (same arguments and params as the running stage, from this or another "
        "machine with the same data and code): run trials, write nothing"))


def command(paths: Paths, params_file: Path) -> list[str]:
    """The command line of one more worker of this study."""
    argv = [sys.executable, "-m", "pipelines.tune", "--params", str(params_file)]
    for f in dataclasses.fields(paths):
        value = getattr(paths, f.name)
        if f.name != "join" and value is not None:
            argv += ["--" + f.name.replace("_", "-"), str(value)]
    return [*argv, "--join"]


def run(params: Params, paths: Paths) -> dict[str, Any] | None:
    """Run (or resume, or join) the study; write and return the best parameters (None when joining)."""
    tune = params.tune
    if paths.detector not in tune.n_trials:
        raise StageError(f"params.yaml: tune.n_trials has no entry for '{paths.detector}'")
    if paths.detector not in params.detectors:
        raise StageError(f"params.yaml: detectors has no entry for '{paths.detector}'")
    fixed = dict(params.detectors[paths.detector] or {})
    start = learning(params, paths, "tune")
    train, val, pipeline = start.train, start.val, start.pipeline
    view = detector_class(paths.detector).input_view
    log.info("%s: %d training windows, %d validation seconds (%d events)", paths.detector, len(train.rows),
             len(val.rows), len(val.events))
    inputs = StudyInputs(
        detector=paths.detector, fixed=fixed, space=SearchSpace.from_yaml(paths.search_space),
        X_train=pipeline.view_of_rows(view, train.rows, train.vitals),
        X_val=pipeline.view_of_rows(view, val.rows, val.vitals), val=start.validation,
        floor=start.floor, signals=tuple(pipeline.signals), policy=params.alarms,
        threshold=params.threshold, objective=Objective.of(params.objective, start.configs.rules),
        tune=tune, pipeline_json=json.dumps(pipeline.to_dict(), sort_keys=True), code=(__name__,),
    )
    if paths.join:
        join_study(inputs)
        return None
    with tempfile.TemporaryDirectory(prefix="biostream-tune-") as tmp:
        params_file = Path(tmp) / "params.yaml"  # the workers read exactly the params this process validated
        params_file.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))

        def start_workers() -> list[subprocess.Popen]:
            return [subprocess.Popen(command(paths, params_file)) for _ in range(tune.workers - 1)]

        try:
            result = run_study(inputs, start_workers if tune.workers > 1 else None, paths.model)
        except RuntimeError as exc:
            raise StageError(str(exc)) from None
    write_json(result, paths.out)
    log.info("%s: best %s %.3f with %s; wrote %s", paths.detector, result["objective"], result["value"],
             result["params"], paths.out)
    return result
