"""The payload floor for `bench_service`: a BentoML endpoint that receives the same request bodies as the
service's `predict` and parses them into Python objects, then answers with the number of windows. No input
checks, no arrays, no features, no model: what any BentoML JSON endpoint pays to take in these windows, so
the throughput this service could reach at best on this machine.

    bentoml serve benchmarks.floor_service:PayloadFloor
"""

from __future__ import annotations

from typing import Any

import bentoml


@bentoml.service(name="biostream-payload-floor", workers=1)
class PayloadFloor:
    @bentoml.api
    def predict(self, windows: list[dict[str, Any]]) -> int:
        return len(windows)
