"""The payload floor for `bench_service`: a BentoML endpoint that receives the same request bodies as the
service's `predict` and parses them into Python objects, then answers with the number of windows. No input
checks, no arrays, no features, no model: what any BentoML JSON endpoint pays to take in these windows, so
the throughput this service could reach at best on this machine. Arrow bodies take the service's own route
(`biostream.serving.asgi.Router`) and are only read into an Arrow table.

    bentoml serve benchmarks.floor_service:PayloadFloor
"""

from __future__ import annotations

from typing import Any

import bentoml
import pyarrow as pa

from biostream.serving import BENTO_MODEL, ServingSpec
from biostream.serving.arrow import ARROW_STREAM
from biostream.serving.asgi import Router
from biostream.serving.routes import Body, Operation, Routes

# as many workers as the service (serve.workers, in the champion's serving spec)
WORKERS = ServingSpec.of_model(bentoml.models.get(f"{BENTO_MODEL}:latest").info.metadata).workers


@bentoml.service(name="biostream-payload-floor", workers=WORKERS)
class PayloadFloor:
    @bentoml.api
    def predict(self, windows: list[dict[str, Any]]) -> int:
        return len(windows)


async def _read_arrow(call: Any) -> tuple[int, bytes]:
    return 200, str(pa.ipc.open_stream(pa.py_buffer(call.body)).read_all().num_rows).encode()


ROUTES = Routes([Operation("GET", p, ()) for p in ("/healthz", "/livez", "/readyz")] + [
    Operation("POST", "/predict", (), bodies=(Body("application/json", 1 << 30),
                                              Body(ARROW_STREAM, 1 << 30, "arrow")))])
PayloadFloor.add_asgi_middleware(Router, routes=ROUTES, handler=lambda name: _read_arrow)
