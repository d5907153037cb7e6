"""DVC stage `package`: the registry's champion into the BentoML model store, and a bento built around it.

    python -m pipelines.package --register results/register.json --bentofile bentofile.yaml \\
        --build-ctx src --out results/bento.json

Resolves `models:/<register.model_name>@champion` to its version, imports that version into the BentoML
model store under `biostream.serving.BENTO_MODEL` (the store lives in `serve.bentoml_home`, inside the
project, git-ignored) with the serving spec as metadata (registered name/version/alias, the signals'
units and physiological ranges from `configs/signals.yaml`, `serve` limits, the version's metrics), then
builds the bento from `bentofile.yaml` (offline: requirements are listed, not locked). An import with the
same version and spec (the store's latest) is reused. Writes the bento and model tags to `--out`; serve with
`BENTOML_HOME=<serve.bentoml_home> bentoml serve <bento tag>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path

from biostream.bundle import ModelBundle
from biostream.config import load_signals, load_yaml
from biostream.io import write_json
from biostream.registry import CHAMPION, RegisterParams
from biostream.runtime import configure
from biostream.serving import BENTO_MODEL, MLFLOW_MODEL_DIR, SPEC_KEY, ServeParams, ServingSpec, bundle_dir
from biostream.tracking import TrackingParams, setup_tracking


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--register", required=True, help="the register stage's decision (a dependency: re-run on change)")
    p.add_argument("--bentofile", required=True)
    p.add_argument("--build-ctx", required=True, help="folder the bento's code is taken from (holds biostream/)")
    p.add_argument("--out", required=True, help="the bento and model tags, as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_yaml(args.params)
    serve = ServeParams.from_params(params)
    rp = RegisterParams.from_params(params)
    tracking = TrackingParams.from_params(params)
    os.environ["BENTOML_HOME"] = str(Path(serve.bentoml_home).resolve())  # before bentoml is imported
    setup_tracking(tracking)

    import bentoml
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(rp.model_name, CHAMPION)
    except MlflowException as exc:
        raise SystemExit(f"no `{CHAMPION}` version of registered model '{rp.model_name}' in {tracking.uri}: run the "
                         f"register stage first (dvc repro register) ({exc.message})") from None
    uri = f"models:/{rp.model_name}/{mv.version}"
    metrics = {k.removeprefix("metric."): float(v) for k, v in mv.tags.items()
               if k.startswith("metric.") and v not in ("", "n/a")}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(download_artifacts(artifact_uri=uri, dst_path=tmp))
        bundle = ModelBundle.load(bundle_dir(local))
        spec = ServingSpec.build(bundle, load_signals(args.signals), serve, model_name=rp.model_name,
                                 model_version=str(mv.version), model_alias=CHAMPION, model_uri=uri, metrics=metrics)
    spec_json = json.dumps(spec.to_dict(), sort_keys=True)
    digest = hashlib.sha256(spec_json.encode()).hexdigest()[:16]
    labels = {"registered_model": rp.model_name, "registered_version": str(mv.version), "detector": spec.detector,
              "spec": digest}

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

    bento = bentoml.bentos.build_bentofile(
        str(Path(args.bentofile).resolve()), build_ctx=str(Path(args.build_ctx).resolve()),
        labels={"registered_model": rp.model_name, "registered_version": str(mv.version), "detector": spec.detector},
    )
    models = [str(m.tag) for m in bento.info.all_models]
    if str(model.tag) not in models:
        raise SystemExit(f"bento {bento.tag} packs {models}, not the champion's {model.tag}")
    write_json({
        "bento": str(bento.tag), "bento_model": str(model.tag), "registered_model": rp.model_name,
        "registered_version": str(mv.version), "alias": CHAMPION, "detector": spec.detector,
        "threshold": bundle.threshold, "window_s": spec.window_s, "bentoml_home": serve.bentoml_home,
        "serve": f"BENTOML_HOME={serve.bentoml_home} bentoml serve {bento.tag}",
    }, args.out)
    log.info("built bento %s (%s version %s, %s); serve with BENTOML_HOME=%s bentoml serve %s", bento.tag,
             rp.model_name, mv.version, spec.detector, serve.bentoml_home, bento.tag)


if __name__ == "__main__":
    main()
