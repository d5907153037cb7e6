"""The `package` stage's work: the registry's champion into the BentoML model store, and a bento around it.

Resolves `models:/<register.model_name>@champion` to its version, imports that version into the BentoML model
store under `biostream.serving.spec.BENTO_MODEL` with the serving spec as metadata (registered name/version/alias,
the signals' units and physiological ranges, `serve` limits, the version's metrics), then builds the bento from
`bentofile.yaml` with the requirements and environment it needs filled in (`bento_options`: the service's
imports at the lock's pins, `quiet.env`). An import with the same version and spec (the store's latest) is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from biostream.core.config import AlarmRule, SignalCatalog, load_yaml
from biostream.core.runtime import quiet_env
from biostream.models.advisor import Advisor
from biostream.models.bundle import ModelBundle
from biostream.models.candidates import Advisories
from biostream.serving.spec import BENTO_MODEL, MLFLOW_MODEL_DIR, SPEC_KEY, ServeParams, ServingSpec, bundle_dir
from biostream.serving.streaming.params import StreamParams
from biostream.tracking.registry import CHAMPION
from biostream.tracking.requirements import service_requirements

log = logging.getLogger("biostream.package")


def bento_options(bentofile: Path, labels: dict[str, str]) -> dict[str, Any]:
    """`bentofile.yaml` as the build reads it: with `python.packages` (derived from the code and the lock) and `envs`
    (quiet.env) filled in, and `labels` added to its own."""
    spec = load_yaml(bentofile)
    for key in ("packages", "requirements_txt"):
        if key in (spec.get("python") or {}):
            raise ValueError(f"{bentofile}: python.{key} is derived by the package stage (requirements.lock); "
                             "remove it from the file")
    return {
        **spec,
        "labels": {**(spec.get("labels") or {}), **labels},
        "python": {**(spec.get("python") or {}), "packages": service_requirements()},
        "envs": [*(spec.get("envs") or []), *({"name": k, "value": v} for k, v in quiet_env().items())],
    }


def served_advisor(advisory: Mapping[str, Any], config: Advisories, rules: tuple[AlarmRule, ...],
                   catalog: SignalCatalog, signals: tuple[str, ...]) -> Advisor | None:
    """The advisory the service answers: the register stage's choice (`Decision.advisory`). A learned source is
    served by its baseline, said so in `why`: the service scores one model, and the learned advisory's threshold
    lives in the evaluation (no learned candidate has won on the real recordings yet). None: no advisory chosen."""
    source, why = advisory.get("source"), str(advisory.get("why", ""))
    if source is None:
        return None
    if advisory.get("type") == "learned":
        log.warning("the registry chose the learned advisory %s; the service serves its baseline %s", source,
                    advisory["baseline"])
        why = (f"the registry chose the learned {source}, which this service cannot serve beside the champion's "
               f"detector; its baseline {advisory['baseline']} advises instead. The registry's reason: {why}")
        source = advisory["baseline"]
    rates = advisory.get("baseline_rates" if advisory.get("type") == "learned" else "rates") or {}
    return Advisor.build(config, str(source), rules, catalog, signals, why, str(advisory.get("decided_on", "")),
                         rates.get("advisory_episodes_per_hour"))


def package(model_name: str, serve: ServeParams, stream: StreamParams, catalog: SignalCatalog, bentofile: Path,
            build_ctx: Path, advisor: Callable[[tuple[str, ...]], Advisor | None] | None = None) -> dict[str, Any]:
    """Import the champion and build its bento; returns what the stage writes (tags, how to serve). `advisor`:
    the served advisory of a model reading the signals given (`served_advisor`)."""
    import bentoml
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        raise LookupError(f"no `{CHAMPION}` version of registered model '{model_name}' in this store: run the "
                          f"register stage first (dvc repro register) ({exc.message})") from None
    uri = f"models:/{model_name}/{mv.version}"
    metrics = {k.removeprefix("metric."): float(v) for k, v in mv.tags.items()
               if k.startswith("metric.") and v not in ("", "n/a")}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=tmp))
        bundle = ModelBundle.load(bundle_dir(local))
        spec = ServingSpec.build(bundle, catalog, serve, model_name=model_name, model_version=str(mv.version),
                                 model_alias=CHAMPION, model_uri=uri, metrics=metrics, stream=stream,
                                 advisor=None if advisor is None else advisor(tuple(bundle.pipeline.signals)))
    spec_json = json.dumps(spec.to_dict(), sort_keys=True)
    version_labels = {"registered_model": model_name, "registered_version": str(mv.version), "detector": spec.detector}
    labels = {**version_labels, "spec": hashlib.sha256(spec_json.encode()).hexdigest()[:16]}

    # the service resolves `<BENTO_MODEL>:latest`: reuse it when it already holds this version and spec
    try:
        model = bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:  # an empty store
        model = None
    if model is not None and model.info.labels == labels:
        log.info("BentoML model %s already holds %s with this spec: reused", model.tag, uri)
    else:
        model = bentoml.mlflow.import_model(BENTO_MODEL, model_uri=uri, labels=labels,
                                            metadata={SPEC_KEY: spec_json})
        log.info("imported %s (%s, threshold %.6g) as BentoML model %s", uri, spec.detector, bundle.threshold,
                 model.tag)
    ModelBundle.load(bundle_dir(model.path_of(MLFLOW_MODEL_DIR)))  # the stored copy loads

    with tempfile.TemporaryDirectory() as tmp:  # the build reads a bentofile: the completed one
        completed = Path(tmp) / "bentofile.yaml"
        completed.write_text(yaml.safe_dump(bento_options(bentofile, version_labels), sort_keys=False))
        bento = bentoml.bentos.build_bentofile(str(completed), build_ctx=str(build_ctx.resolve()))
    models = [str(m.tag) for m in bento.info.all_models]
    if str(model.tag) not in models:
        raise RuntimeError(f"bento {bento.tag} packs {models}, not the champion's {model.tag}")
    return {
        "bento": str(bento.tag), "bento_model": str(model.tag), "registered_model": model_name,
        "registered_version": str(mv.version), "alias": CHAMPION, "detector": spec.detector,
        "threshold": bundle.threshold, "window_s": spec.window_s, "bentoml_home": serve.bentoml_home,
        "advisory": None if spec.advisor is None else spec.advisor.name,
        "serve": f"BENTOML_HOME={home_for_shell(serve.bentoml_home)} bentoml serve {bento.tag}",
    }


def home_for_shell(home: str) -> str:
    """BENTOML_HOME as a command run from the project root must set it: absolute (`bentoml serve` of a bento
    imports the service from inside the bento, where a relative home finds no model)."""
    return home if Path(home).is_absolute() else f"$PWD/{home}"
