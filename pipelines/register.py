"""DVC stage `register`: the best evaluated detector into the MLflow model registry, champion only if better.

    python -m pipelines.register --models models --features data/features --synthetic data/synthetic \\
        --evaluation metrics/evaluate.json --out results/register.json

What it decides and how: `biostream.tracking.register`. The decision goes to `--out` and the version's tags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from biostream.core.config import Configs
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure
from biostream.core.tracking import TrackingParams, setup_tracking
from biostream.features.table import FeatureSet, SourceParams
from biostream.models.evaluation import Objective
from biostream.tracking.lock import lock_target
from biostream.tracking.register import TestSet, register
from biostream.tracking.registry import RegisterParams


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--models", required=True, help="the train stage's folder (bundles and index.json)")
    p.add_argument("--features", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--vitaldb", required=True)
    p.add_argument("--recordings", required=True)
    p.add_argument("--real", required=True, help="the ingest_real stage's output folder")
    p.add_argument("--evaluation", required=True, help="the evaluate stage's metrics JSON")
    p.add_argument("--out", required=True, help="the decision, as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    rp = RegisterParams.from_params(params)
    tracking = TrackingParams.from_params(params)
    lock_target(tracking.uri, rp.lock_url, Path(args.out))  # a lock that cannot hold across machines fails here
    setup_tracking(tracking)
    configs = Configs.load(args.signals, args.alarms)
    features = FeatureSet.open(args.features, {"synthetic": args.synthetic, "vitaldb": args.vitaldb,
                                               "recordings": args.recordings, "real": args.real})
    objective = Objective.from_params(params, configs.rules)
    test = TestSet(features, rp.source, objective)
    learned_from = SourceParams.from_params(params).train  # their test patients were evaluated; others whole
    real = {src: TestSet(features, src, objective, "test" if src in learned_from else None)
            for src in rp.real_sources if features.has_rows(src)}
    evaluation = json.loads(Path(args.evaluation).read_text())
    try:
        decision = register(rp, tracking, params, Path(args.models), evaluation, test, Path(args.out),
                            [r.kind for r in configs.rules], real)
    except (RuntimeError, KeyError) as exc:
        raise SystemExit(str(exc)) from None
    write_json(decision.to_dict(), args.out)
    log.info("%s: %s (%s); champion is version %s", rp.model_name, "promoted" if decision.promoted else "kept",
             decision.reason, decision.champion_after)


if __name__ == "__main__":
    main()
