"""Stage `package`: the registry's champion into the BentoML model store, and a bento built around it.

What it builds and how: `biostream.tracking.package`. The store lives in `serve.bentoml_home` (inside the project,
git-ignored); serve with `make serve`, or from the project root with
`BENTOML_HOME=$PWD/<serve.bentoml_home> bentoml serve <bento tag>` (the home must be absolute).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biostream.core.config import load_alarm_rules, load_signals
from biostream.core.io import write_json
from biostream.core.mlflow_store import setup_tracking
from biostream.core.params import Params
from biostream.models.candidates import Advisories
from biostream.stages import StageError, help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths:
    register: Path = field(metadata=help_of("the register stage's decision (a dependency: re-run on change)"))
    bentofile: Path
    build_ctx: Path = field(metadata=help_of("folder the bento's code is taken from (holds biostream/)"))
    out: Path = field(metadata=help_of("the bento and model tags, as JSON"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")
    advisories: Path = Path("configs/advisories.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Import the champion into BentoML's store and build its bento; write and return their tags."""
    serve = params.serve
    # BentoML reads its home when first imported: set before (a process that imported it already keeps its own)
    os.environ["BENTOML_HOME"] = str(Path(serve.bentoml_home).resolve())
    setup_tracking(params.tracking)
    from biostream.tracking.package import package, served_advisor

    catalog = load_signals(paths.signals)
    rules = load_alarm_rules(paths.alarms, catalog)
    config = Advisories.load(paths.advisories, rules)
    decision = json.loads(paths.register.read_text(encoding="utf-8"))
    try:
        result = package(params.register_.model_name, serve, params.stream, catalog, paths.bentofile,
                         paths.build_ctx, lambda signals: served_advisor(decision.get("advisory") or {}, config, rules,
                                                                         catalog, signals))
    except (LookupError, RuntimeError) as exc:
        raise StageError(str(exc)) from None
    write_json(result, paths.out)
    log.info("built bento %s (%s version %s, %s; advisory %s); serve with %s", result["bento"],
             result["registered_model"], result["registered_version"], result["detector"], result["advisory"],
             result["serve"])
    return result
