"""The service's HTTP operations, declared once (`operations`): what the guard authorises, what the router runs and
what the API document says each needs (`biostream.serving.routes`). A new endpoint is one line here and its
handler; tests/model/test_routes.py walks every operation with every role and path variant."""

from __future__ import annotations

from biostream.serving.arrow import ARROW_STREAM, largest_body
from biostream.serving.routes import OPEN, Body, Operation, Routes
from biostream.serving.security.keys import ROLES
from biostream.serving.spec import ServingSpec
from biostream.serving.streaming.arrow_rows import max_decoded_bytes

JSON = "application/json"
ACK_BODY = 1024  # an acknowledgement reads no body: an empty one, or `{}`, is ignored; more is refused (413)


def operations(spec: ServingSpec) -> Routes:
    """Every operation of the service for `spec` (its body limits)."""
    json_limit = spec.max_body_bytes or largest_body(spec)
    # a stream message: JSON within the JSON limit (parsed into Python objects); Arrow as long as its most rows take
    # uncompressed (what bounds its memory is its rows and decoded size, read from its metadata before decoding)
    arrow_stream = (max_decoded_bytes(spec.stream["max_message_bed_s"], len(spec.signals)) if spec.stream
                    else json_limit)
    return Routes([
        # open: an orchestrator's probes and the API's description (no patient data in them)
        *(Operation(m, p, OPEN) for p in ("/healthz", "/livez", "/readyz") for m in ("GET", "HEAD")),
        Operation("GET", "/", OPEN), Operation("GET", "/docs.json", OPEN), Operation("GET", "/schema.json", OPEN),
        Operation("GET", "/static_content", OPEN, files=True), Operation("GET", "/assets", OPEN, files=True),
        Operation("GET", "/board", OPEN, handler="board_page"),  # a page; its data come with the clinician's key
        # the model (BentoML's endpoints; /predict also takes Arrow)
        Operation("POST", "/predict", ("integrator",), bodies=(
            Body(JSON, json_limit), Body(ARROW_STREAM, largest_body(spec), "predict_arrow"))),
        Operation("POST", "/score_series", ("integrator",), bodies=(Body(JSON, json_limit),)),
        Operation("POST", "/explain", ("integrator", "clinician"), bodies=(Body(JSON, json_limit),)),
        Operation("POST", "/metadata", ROLES, bodies=(Body(JSON, json_limit),)),
        Operation("GET", "/metrics", ("admin",)),
        # bedside streams (biostream.serving.streaming.http)
        Operation("POST", "/ingest", ("gateway",), bodies=(Body(JSON, json_limit, "ingest"),
                                                           Body(ARROW_STREAM, arrow_stream, "ingest"))),
        Operation("GET", "/alarms", ("clinician",), handler="alarms"),
        Operation("GET", "/beds", ("clinician",), handler="beds"),
        Operation("GET", "/beds/{bed}/scores", ("clinician",), handler="scores"),
        Operation("GET", "/beds/{bed}/episodes", ("clinician",), handler="episodes"),
        Operation("GET", "/beds/{bed}/episodes/{start}/explain", ("clinician",), handler="explain_episode"),
        Operation("POST", "/beds/{bed}/episodes/{start}/ack", ("clinician",),
                  bodies=(Body(JSON, ACK_BODY, "acknowledge"),)),
        Operation("GET", "/beds/{bed}/report", ("clinician",), handler="report"),
        Operation("GET", "/monitoring", ("clinician", "admin"), handler="monitoring"),
        # the audit trail (answered by the guard, which holds the key store)
        Operation("GET", "/audit", ("admin",), handler="audit"),
    ])
