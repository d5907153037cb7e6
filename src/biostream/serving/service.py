"""The BentoML service: raw vital-sign windows in, calibrated alarms and explanations out.

    bentoml serve <bento tag>               # the bento the `package` stage built (results/bento.json)
    bentoml serve biostream.serving.service:VitalsService   # from the source tree, for development

The model is the registry's champion as `package` imported it into the BentoML model store
(`biostream.serving.BENTO_MODEL`), its serving spec (registered version, signal ranges, limits) in its metadata.
This module only declares the endpoints; what they do is the rest of `biostream.serving` (tested without a server).
Importing it reads the model store, as any BentoML service module does.
"""

from __future__ import annotations

import gc
import os

# One TensorFlow thread per op: the worker's other core parses and answers HTTP (faster end to end:
# docs/benchmarks.md). Set before TensorFlow loads; a user's setting wins.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

from typing import Annotated, Any  # noqa: E402

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
from bentoml.exceptions import ServiceUnavailable  # noqa: E402
from bentoml.validators import ContentType  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from biostream.models.bundle import ModelBundle  # noqa: E402
from biostream.serving import memory  # noqa: E402
from biostream.serving.api import operations  # noqa: E402
from biostream.serving.arrow import windows_from_arrow  # noqa: E402
from biostream.serving.asgi import Call, Document, Router  # noqa: E402
from biostream.serving.batching import Batcher  # noqa: E402
from biostream.serving.errors import quiet_bad_input  # noqa: E402
from biostream.serving.monitoring import start_monitor  # noqa: E402
from biostream.serving.schemas import ExplainResult, Metadata, Prediction, Schemas, SeriesResult  # noqa: E402
from biostream.serving.scorer import Scorer  # noqa: E402
from biostream.serving.security.guard import Guard, add_security  # noqa: E402
from biostream.serving.spec import BENTO_MODEL, MLFLOW_MODEL_DIR, ServingSpec, bundle_dir  # noqa: E402
from biostream.serving.streaming.engine import StreamEngine  # noqa: E402
from biostream.serving.streaming.http import StreamEndpoints  # noqa: E402
from biostream.serving.streaming.openapi import add_stream_paths  # noqa: E402
from biostream.serving.streaming.params import STORE_ENV, StreamParams  # noqa: E402
from biostream.serving.streaming.store import Store  # noqa: E402

MODEL = bentoml.models.BentoModel(f"{BENTO_MODEL}:latest")
SPEC = ServingSpec.of_model(MODEL.stored.info.metadata)
SCHEMAS = Schemas(SPEC)
ROUTES = operations(SPEC)  # every operation, its roles, bodies and limits: what the guard and the router read
WindowInput, Series, WindowBatch = SCHEMAS.WindowInput, SCHEMAS.Series, SCHEMAS.WindowBatch
PREDICTIONS = TypeAdapter(list[Prediction])


def _overloaded(waited_s: float) -> Exception:
    return ServiceUnavailable(f"overloaded: this request queued {waited_s * 1000:.0f} ms for the model, longer than "
                              f"serve.max_latency_ms ({SPEC.max_latency_ms} ms); retry later or send fewer windows")


# one worker process per `serve.workers` (params.yaml): each parses, checks and scores its own requests; how many it
# serves at once is the guard's (serve.max_concurrency: 429 with Retry-After, audited), not BentoML's (unaudited)
@bentoml.service(name="biostream", workers=SPEC.workers, traffic={"timeout": 60})
class VitalsService:
    model = MODEL

    def __init__(self) -> None:
        # One BLAS/OpenMP thread: a served window's matrix products are tiny, and OpenBLAS's second thread
        # spins between calls, taking the core that answers HTTP (a lower single-window p99)
        threadpool_limits(1)
        quiet_bad_input()  # BentoML's log of a refused input: one WARNING line, not an ERROR with a traceback
        bundle = ModelBundle.load(bundle_dir(self.model.path_of(MLFLOW_MODEL_DIR)))
        bundle.detector.prepare_for_serving()  # e.g. the LSTM's ONNX Runtime session for small batches
        self.scorer = Scorer(bundle, SPEC)
        # adaptive batching without BentoML's wait estimator, which held single windows back ~35 ms for
        # minutes after a burst (biostream.serving.batching). Its calls run in their own thread, so a long score_series
        # or explain (BentoML's thread) no longer holds predict back. Both only read the fitted model; the lazy
        # parts predict uses (small-batch fast paths, explainers) are built by the warm-up below, before any request.
        self.batcher = Batcher(self.scorer.predict, max_items=SPEC.max_batch_windows,
                               max_wait_s=SPEC.max_latency_ms / 1000, overloaded=_overloaded)
        # warm up every path once (compiled functions, lazily built fast-inference models)
        warm = np.tile(np.asarray([np.mean(SPEC.valid[s]) for s in SPEC.signals])[:, None], (1, SPEC.window_s))
        self.scorer.bundle.score(warm[None])
        self.scorer.bundle.explain(warm[None])
        # the model's objects (hundreds of thousands with TensorFlow) leave the collector's generations: a full
        # collection would otherwise walk them all, a pause in the middle of a request
        gc.collect()
        gc.freeze()
        # bedside streams (POST /ingest, GET /beds/..., /alarms): every worker shares the beds through the store
        self.streams = None
        if SPEC.stream:
            params = StreamParams.from_dict(SPEC.stream).with_environment()
            self.streams = StreamEndpoints(StreamEngine(self.scorer, Store(params.store), params))
            if bundle.reference is not None:  # the live patients against the training reference (/metrics, board)
                self.streams.monitor = start_monitor(self.streams.engine.store, bundle, SPEC, params.monitor,
                                                     self.scorer.model.model_dump())
        memory.cap(SPEC.worker_memory_mb)  # beyond this, a request fails alone (413), not the worker

    def handler(self, name: str) -> Any:
        """The method answering a declared operation (`biostream.serving.api`): this service's, else its streams'."""
        own = getattr(self, name, None)
        if own is not None and name in ("predict_arrow", "board_page"):
            return own
        if self.streams is None:
            return _no_streams
        return getattr(self.streams, name)

    # the content type is declared: BentoML otherwise derives it from the list's JSON schema on every response
    @bentoml.api
    async def predict(self, windows: WindowBatch) -> Annotated[list[Prediction], ContentType("application/json")]:
        """Score a batch of windows: anomaly score, alarm at the calibrated threshold, the signals
        contributing most (for alarms), and the model that answered. Concurrent requests are scored together
        (adaptive batching: those that arrive while the model is busy share its next call)."""
        return await self.batcher.submit(windows)

    async def predict_arrow(self, call: Call) -> tuple[int, bytes | dict[str, str]]:
        """`predict` for a batch sent as an Arrow IPC stream (`biostream.serving.arrow`; routed here by its
        Content-Type): the same checks, batching and answer."""
        try:
            windows = windows_from_arrow(call.body, SPEC)
        except ValueError as error:
            return 400, {"error": str(error)}
        try:
            return 200, PREDICTIONS.dump_json(await self.batcher.submit(windows))
        except ServiceUnavailable as error:
            return 503, {"error": str(error)}

    @staticmethod
    async def board_page(call: Call) -> tuple[int, Any]:
        """GET /board: the bed board's page (`biostream.serving.board`); its data come from GET /beds."""
        from biostream.serving import board

        return 200, Document(board.page(), "text/html; charset=utf-8", csp=board.CSP)

    @bentoml.api
    def score_series(self, series: Series) -> SeriesResult:
        """Score every second of a recording; alarm flags and episodes after the alarm policy."""
        return self.scorer.score_series(series)

    @bentoml.api
    def explain(self, window: WindowInput) -> ExplainResult:
        """Contributions per signal (and per feature for feature-reading models) to one window's score."""
        return self.scorer.explain(window)

    @bentoml.api
    def metadata(self) -> Metadata:
        """The model version, detector, threshold, window length, signals, limits and metrics."""
        return self.scorer.metadata()


async def _no_streams(call: Call) -> tuple[int, Any]:
    return 503, {"error": "this bento was built without params.yaml: stream; re-run the package stage"}


def _service() -> VitalsService:
    return bentoml.get_current_service()


def _key_store() -> str:
    """The keys and the audit trail live in the stream store's database (docs/security.md)."""
    if SPEC.stream:
        return StreamParams.from_dict(SPEC.stream).with_environment().store
    return os.environ.get(STORE_ENV) or "sqlite:///stores/streams.db"


# every request is matched to its declared operation (ROUTES); all but the open ones need a key with a role that
# operation allows (401/403 before anything reads it; a path matching nothing: 404/405) and leave an entry in the
# audit trail: outermost of our middleware
VitalsService.add_asgi_middleware(Guard, store_url=_key_store, routes=ROUTES, max_concurrency=SPEC.max_concurrency)

# then the operation the guard matched is run: a body of a declared type within its limit (415, 413 before it is
# parsed), read by our handler or replayed to BentoML's endpoint
VitalsService.add_asgi_middleware(
    Router, routes=ROUTES, handler=lambda name: _service().handler(name), limit_note="serve.max_body_mb",
    openapi=lambda doc: _document(doc))


def _document(doc: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document with what the router serves and what each operation needs. Its schemas are
    pydantic's JSON Schema (`"type": "null"` for an optional value), which is OpenAPI 3.1's, not the 3.0.2 BentoML
    writes on it: a client validating answers against 3.0 would refuse every null."""
    doc = add_security(add_stream_paths(doc, SPEC) if SPEC.stream else doc, ROUTES)
    doc["openapi"] = "3.1.0"
    # BentoML writes an endpoint's answer inline, its optional values flattened to their type (a null answered
    # would break it), beside the component it made of the same model, whole: the answer refers to that
    components = doc.get("components", {}).get("schemas", {})
    for methods in doc.get("paths", {}).values():
        for op in methods.values():
            for answer in op.get("responses", {}).values() if isinstance(op, dict) else ():
                for content in answer.get("content", {}).values():
                    title = content.get("schema", {}).get("title")
                    if title in components and "$ref" not in content["schema"]:
                        content["schema"] = {"$ref": f"#/components/schemas/{title}"}
    return doc
