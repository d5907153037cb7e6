"""DVC stage `package`: the registry's champion into the BentoML model store, and a bento built around it.

    python -m pipelines.package --register results/register.json --bentofile bentofile.yaml \\
        --build-ctx src --out results/bento.json

What it builds and how: `biostream.tracking.package`. The store lives in `serve.bentoml_home` (inside the project,
git-ignored); serve with `make serve`, or from the project root with
`BENTOML_HOME=$PWD/<serve.bentoml_home> bentoml serve <bento tag>` (the home must be absolute).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from biostream.core.config import load_signals
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure
from biostream.core.tracking import TrackingParams, setup_tracking
from biostream.serving.spec import ServeParams
from biostream.tracking.registry import RegisterParams


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
    params = load_params(args.params)
    serve = ServeParams.from_params(params)
    os.environ["BENTOML_HOME"] = str(Path(serve.bentoml_home).resolve())  # before bentoml is imported
    setup_tracking(TrackingParams.from_params(params))
    from biostream.tracking.package import package

    try:
        result = package(RegisterParams.from_params(params).model_name, serve, load_signals(args.signals),
                         Path(args.bentofile), Path(args.build_ctx))
    except (LookupError, RuntimeError) as exc:
        raise SystemExit(str(exc)) from None
    write_json(result, args.out)
    log.info("built bento %s (%s version %s, %s); serve with %s", result["bento"], result["registered_model"],
             result["registered_version"], result["detector"], result["serve"])


if __name__ == "__main__":
    main()
