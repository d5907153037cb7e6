"""The bedside-stream endpoints in the service's OpenAPI document (`/docs.json`, Swagger at `/`): BentoML documents
the endpoints it declares; those our router runs (`biostream.serving.api`: `POST /ingest`, the bed and board
reads, `/alarms`) are added with their schemas to the document BentoML serves, so that integrators and tools
(schemathesis) see the whole API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from biostream.serving.board import ALARM_FILTERS, SORTS, STATES
from biostream.serving.schemas import (
    ADVISORY_NOTE,
    B64_F32,
    CLASS_NOTE,
    CONDITIONS_NOTE,
    AlarmClass,
    Episode,
    ModelRef,
)
from biostream.serving.spec import ServingSpec
from biostream.serving.streaming.messages import BED_FORM, BED_ID, LAST_SECOND

TIME_NOTE = "ISO 8601 with a zone (2026-11-21T10:15:00Z) or seconds since the epoch, 1970 to 9999"
BedId = Field(min_length=1, max_length=128, pattern=f"^{BED_ID.pattern}$", description=f"the bed's id: {BED_FORM}")
# ISO 8601 with a zone, as the service reads it (datetime.fromisoformat), in years 1971 to 9998 (so that a zone's
# offset never takes it out of 1970-9999) and days to 28 (every month has them): what the document allows, the
# service takes
ISO_TIME = (r"^(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
            r"T([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
TIME_SCHEMA = {"anyOf": [{"type": "string", "pattern": ISO_TIME},
                         {"type": "number", "minimum": 0, "maximum": LAST_SECOND}]}
START_PATH = "^(?:" + ISO_TIME[1:-1] + "|[0-9]{1,11})$"  # an episode's start in a path: as answered, or epoch s


class StreamItem(BaseModel):
    """One bed's consecutive seconds at 1 Hz from `start`."""

    model_config = ConfigDict(extra="forbid")  # and one of vitals, vitals_f32 (`add_stream_paths`)

    bed: str = BedId
    start: Annotated[str, Field(pattern=ISO_TIME)] | Annotated[float, Field(ge=0, le=LAST_SECOND)] = Field(
        description=f"the time of its first second: {TIME_NOTE}")
    vitals: dict[str, list[float | None]] | None = Field(
        None, description="per signal, one value a second, null where missing; a signal left out is missing")
    vitals_f32: dict[str, str] | None = Field(None, description="or: per signal, base64 little-endian float32, NaN "
                                                                "where missing (send vitals or vitals_f32)")


class StreamMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[StreamItem]


class Problem(BaseModel):
    """What was refused or changed in a message, named so that the sender can fix it."""

    index: int | None = Field(description="the item (JSON) or row (Arrow) it is about")
    bed: str | None
    field: str
    value: Any = None
    limit: str = Field(description="the form or range expected")
    error: str
    kept: str = Field(description="what happened to the rest: 'stored as missing', 'nothing of this item', ...")
    refused: bool = Field(description="values of the bed were not stored (not merely stored as missing): a bed "
                                      "none of whose data a message stored gets the condition 'no valid data'")


class StreamSecond(BaseModel):
    time: datetime
    score: float
    alarm: bool = Field(description="the k-of-n alarm policy is on at this second")
    alarm_class: AlarmClass | None = Field(description=CLASS_NOTE)
    top_signals: list[str]
    conditions: list[str] = Field(description=CONDITIONS_NOTE)
    advisory: bool = Field(False, description="the served advisory is on at this second (" + ADVISORY_NOTE + ")")


class StreamEpisode(Episode):
    """A bed's episode as the stream store keeps it (`answers.episode_answer`, the one reader of its rows)."""

    bed: str
    open: bool
    acknowledged_at: datetime | None = Field(None, description="when a clinician acknowledged it (null: not yet)")
    acknowledged_by: str | None = Field(None, description="the key id that acknowledged it")
    model_version: str | None = Field(None, description="the registered version of the model that opened it (null: "
                                                        "stored before versions were kept)")
    realarmed_at: datetime | None = Field(None, description="when an acknowledgement of it stopped holding: it "
                                                            "lapsed (stream.ack_silence_s) or the patient worsened")
    realarm_why: Literal["lapsed", "worsened"] | None = None


class BedAnswer(BaseModel):
    bed: str
    seconds: list[StreamSecond] = Field(description="the new seconds scored")
    opened: list[StreamEpisode]
    closed: list[StreamEpisode]
    repeated: int = Field(description="seconds already stored (a replay): nothing changed")
    merged: int = Field(description="late values merged into stored seconds (within stream.late_s)")


class IngestAnswer(BaseModel):
    beds: list[BedAnswer]
    problems: list[Problem] = Field(description="the first 100 problems")
    problems_total: int = Field(description="every problem, listed or not")
    threshold: float
    model: ModelRef


class StoredSecond(BaseModel):
    time: datetime
    score: float
    above_threshold: bool
    alarm: bool = Field(description="inside an alarm episode (after the refractory merge)")
    alarm_class: AlarmClass | None = Field(description=CLASS_NOTE)
    advisory: bool = Field(False, description="inside an advisory episode (after its refractory merge; never an "
                                              "alarm)")
    top_signals: list[str]
    vitals: dict[str, float | None]
    scored_at: datetime


class BedScores(BaseModel):
    bed: str
    threshold: float
    seconds: list[StoredSecond]


class BedEpisodes(BaseModel):
    bed: str
    episodes: list[StreamEpisode]


class Acknowledged(BaseModel):
    bed: str
    episode: StreamEpisode
    changed: bool = Field(description="false: an acknowledgement already held; nothing changed")


class OpenAlarms(BaseModel):
    open: list[StreamEpisode]


class BoardAlarm(StreamEpisode):
    open_for_s: int = Field(description="seconds since the service opened it")
    check: str | None = Field(description="a technical alarm: what to check (the probe, the line, ...)")


class BoardAdvisory(StreamEpisode):
    open_for_s: int = Field(description="seconds since the service opened it")


class BedTile(BaseModel):
    bed: str
    recording: bool = Field(description="false: no recording (new, or went silent and was closed)")
    last_time: datetime | None = Field(description="its newest stored second")
    vitals: dict[str, float | None] = Field(description="the values of its newest second, null where missing")
    score: float | None
    alarm: BoardAlarm | None = Field(description="its open episode (physiological before technical), if any")
    advisory: BoardAdvisory | None = Field(None, description="its oldest open advisory (yellow: an event is likely "
                                                             "soon; never an alarm), if any")


class BoardCounts(BaseModel):
    beds: int
    physiological: int = Field(description="beds with an open physiological alarm")
    technical: int = Field(description="beds with an open technical alarm only")
    unacknowledged: int
    advisory: int = Field(0, description="beds with an open advisory (counted apart from the alarms)")


class Limit(BaseModel):
    kind: str = Field(description="the bedside rule's kind")
    op: str
    threshold: float


class SignalName(BaseModel):
    name: str
    label: str
    unit: str
    limits: list[Limit] = Field(default_factory=list, description="the floor's bedside limits on the signal")


class Board(BaseModel):
    beds: list[BedTile] = Field(description="one page of beds")
    total: int = Field(description="beds that match the filter")
    page: int
    size: int
    pages: int
    counts: BoardCounts
    threshold: float
    model: ModelRef
    signals: list[SignalName]
    monitoring: dict[str, Any] | None = Field(description="GET /monitoring's state (its alerts), if the service "
                                                          "monitors")
    now: datetime


class EpisodeExplanation(BaseModel):
    bed: str
    episode: StreamEpisode
    driver: str = Field(description="'model' or 'rules': what set the window's score")
    method: str
    top_signals: list[str]
    signals: dict[str, float] = Field(description="per-signal contributions to the score")
    score: float
    threshold: float
    alarm_class: AlarmClass | None
    model: ModelRef


class Refusal(BaseModel):
    error: str = Field(description="what is wrong and how to fix it")


MODELS = [StreamMessage, IngestAnswer, BedScores, BedEpisodes, Acknowledged, OpenAlarms, Board, EpisodeExplanation,
          Refusal]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _time(name: str, what: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": f"{what}: {TIME_NOTE}",
            "schema": TIME_SCHEMA}


def add_stream_paths(doc: dict[str, Any], spec: ServingSpec) -> dict[str, Any]:
    """Add the stream endpoints and their schemas to BentoML's OpenAPI document `doc` (in place; returned)."""
    _, defs = models_json_schema([(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    stream = spec.stream or {}
    kinds = [] if spec.advisor is None else [r.kind for r in spec.advisor.rules]  # the served advisory's, if any
    max_s = stream.get("max_message_s")
    seconds = {"minItems": 1, **({"maxItems": max_s} if max_s else {})}
    item = schemas["StreamItem"]["properties"]
    arrays = {"type": "object", "minProperties": 1, "additionalProperties": False,
              "properties": {s: {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                                 **seconds} for s in spec.signals}}
    packed = {"type": "object", "minProperties": 1, "additionalProperties": False,
              "properties": {s: {"type": "string", "minLength": 8, "pattern": B64_F32} for s in spec.signals}}
    item["vitals"] = {"anyOf": [arrays, {"type": "null"}], "description": item["vitals"].get("description", "")}
    item["vitals_f32"] = {"anyOf": [packed, {"type": "null"}],
                          "description": item["vitals_f32"].get("description", "")}
    # one of them, the other left out or null
    schemas["StreamItem"]["oneOf"] = [
        {"required": ["vitals"], "properties": {"vitals": arrays, "vitals_f32": {"type": "null"}}},
        {"required": ["vitals_f32"], "properties": {"vitals_f32": packed, "vitals": {"type": "null"}}}]
    if stream.get("max_message_beds"):
        schemas["StreamMessage"]["properties"]["samples"]["maxItems"] = stream["max_message_beds"]
    doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
    bed = {"name": "bed", "in": "path", "required": True, "description": f"the bed's id: {BED_FORM}",
           "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": f"^{BED_ID.pattern}$"}}
    limit = {"name": "limit", "in": "query", "required": False, "description": "the newest this many seconds",
             "schema": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 600}}
    bad = _json(Refusal, "a bad bed id, time or query parameter, named")
    tags, board = ["Bedside streams"], ["Bed board"]
    start = {"name": "start", "in": "path", "required": True,
             "description": f"the episode's start (as GET /beds/{{bed}}/episodes answers it): {TIME_NOTE}",
             "schema": {"type": "string", "pattern": START_PATH}}
    limits = (f"; at most {stream['max_message_beds']} items of at most {max_s} seconds, and "
              f"{stream['max_message_bed_s']} bed-seconds in all (413 beyond: docs/streams.md, Limits); seconds more "
              f"than {stream['max_skew_s']} s ahead of the server's clock are refused (the bed then shows the "
              f"technical condition 'no valid data')" if stream.get("max_message_bed_s") else "")
    doc.setdefault("paths", {}).update({
        "/ingest": {"post": {
            "tags": tags, "operationId": "ingest", "summary": "Each bed's newest seconds in; scores, alarms out",
            "description": "Scores every new second of every bed in the message as the window ending at it, stores "
                           "it, and answers per bed. A second already stored is a repeat (a replay is safe); a bad "
                           "item or value is named in `problems` and loses only itself" + limits +
                           ". Also takes an Arrow IPC stream (application/vnd.apache.arrow.stream): one row per bed "
                           "and second, columns bed, time and one per signal.",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref(StreamMessage)},
                "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {"200": _json(IngestAnswer, "what was stored and answered, and what was refused"),
                          "400": {"description": "nothing in the message could be read: `error`, or `problems` "
                                                 "naming each item", "content": {"application/json": {
                                                     "schema": {"anyOf": [_ref(Refusal), _ref(IngestAnswer)]}}}},
                          "403": _json(Refusal, "a key tied to other beds (every item's bed is not its)"),
                          "413": _json(Refusal, "the body is over the service's limit (serve.max_body_mb), or the "
                                                "message carries more bed-seconds than stream.max_message_bed_s "
                                                "(an Arrow stream: counted before it is decoded)"),
                          "415": _json(Refusal, "a Content-Type other than JSON or Arrow")}}},
        "/beds/{bed}/scores": {"get": {
            "tags": tags, "operationId": "bed_scores", "summary": "A bed's stored seconds",
            "parameters": [bed, _time("since", "from this time"), _time("until", "before this time"), limit],
            "responses": {"200": _json(BedScores, "the bed's stored seconds, oldest first (none: an empty list)"),
                          "400": bad}}},
        "/beds/{bed}/episodes": {"get": {
            "tags": tags, "operationId": "bed_episodes", "summary": "A bed's alarm episodes",
            "parameters": [bed, _time("since", "episodes open at or after this time")],
            "responses": {"200": _json(BedEpisodes, "the bed's alarm episodes, by start"), "400": bad}}},
        "/beds/{bed}/episodes/{start}/ack": {"post": {
            "tags": tags, "operationId": "acknowledge", "summary": "Acknowledge an alarm episode (clinician)",
            "description": "Records who (the key) acknowledged the bed's episode that started at `start`, and when. "
                           "It holds for stream.ack_silence_s (then an episode still open alarms again), or until "
                           "the episode's peak score rises stream.ack_worsening above the one acknowledged; while it "
                           "holds, a repeat changes nothing (`changed`: false). `?advisory=<kind>` acknowledges "
                           "the advisory of that rule kind that started then instead. No body is read (at most 1 kB "
                           "is taken).",
            "parameters": [bed, start, *([{"name": "advisory", "in": "query", "required": False,
                                           "description": "the rule kind of the advisory episode to acknowledge "
                                                          "(POST /metadata: advisory.kinds); absent: the alarm",
                                           "schema": {"type": "string", "enum": kinds}}] if kinds else [])],
            "responses": {"200": _json(Acknowledged, "the episode, acknowledged"), "400": bad,
                          "404": _json(Refusal, "the bed has no episode that started then")}}},
        "/alarms": {"get": {
            "tags": tags, "operationId": "open_alarms", "summary": "The open alarm episodes of every bed",
            "responses": {"200": _json(OpenAlarms, "every bed's open episode"), "400": bad}}},
        "/beds": {"get": {
            "tags": board, "operationId": "board", "summary": "Every bed: newest values and open alarm (the board)",
            "description": "Open alarms first (physiological not yet acknowledged, acknowledged, technical; each "
                           "longest-open first), or by bed or newest data; filtered by a part of the bed id, by "
                           "alarm and by state (a bed recording, or stopped: closed for silence; a bed with an open "
                           "alarm is always shown); one page.",
            "parameters": [
                {"name": "q", "in": "query", "required": False, "description": "a part of the bed id (any case)",
                 "schema": {"type": "string", "maxLength": 128}},
                {"name": "alarm", "in": "query", "required": False,
                 "schema": {"enum": list(ALARM_FILTERS), "default": "any"}},
                {"name": "state", "in": "query", "required": False,
                 "schema": {"enum": list(STATES), "default": "any"}},
                {"name": "sort", "in": "query", "required": False,
                 "schema": {"enum": list(SORTS), "default": "alarm"}},
                {"name": "page", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1}},
                {"name": "size", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}],
            "responses": {"200": _json(Board, "one page of beds, the counts, the model"), "400": bad}}},
        "/beds/{bed}/episodes/{start}/explain": {"get": {
            "tags": board, "operationId": "explain_episode", "summary": "Why an alarm episode opened",
            "description": "`POST /explain` of the window that opened the episode (its first second and the "
                           "model's window before it, as stored).",
            "parameters": [bed, start],
            "responses": {"200": _json(EpisodeExplanation, "the explanation"), "400": bad,
                          "404": _json(Refusal, "the bed has no episode that started then, or it is a condition not "
                                                "read from the signals ('no valid data')")}}},
        "/beds/{bed}/report": {"get": {
            "tags": board, "operationId": "case_report", "summary": "A bed's case report (HTML, PDF or text)",
            "description": "The timeline (signals, score, episodes shaded by class), the episodes and their "
                           "explanations, time beyond each bedside limit, the model and its floor, and a summary. "
                           "Default period: the bed's last 24 h of recording; since before until, at most 7 days "
                           "apart (400 otherwise).",
            "parameters": [bed, _time("since", "from this time"), _time("until", "before this time"),
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"enum": ["html", "pdf", "text"], "default": "html"}}],
            "responses": {"200": {"description": "the report", "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": {"type": "string"}}}},
                "400": bad, "404": _json(Refusal, "the bed has no stored second (and no period was asked)")}}},
        "/board": {"get": {
            "tags": board, "operationId": "board_page", "summary": "The bed board (a page for a browser)",
            "description": "A static page with no patient data: it asks for a clinician's key and reads GET /beds "
                           "and the bed endpoints with it. A bed's page: /board#bed=<bed>.",
            "responses": {"200": {"description": "the page", "content": {"text/html": {"schema": {
                "type": "string"}}}}}}},
        "/monitoring": {"get": {
            "tags": board, "operationId": "monitoring", "summary": "The live patients against the model's reference",
            "description": "Per signal drift and missingness against the training reference, alarm episodes per "
                           "bed-hour by class and live recall against the bedside rules' events, over the rolling "
                           "period, and the alerts they raise (docs/monitoring.md).",
            "responses": {"200": {"description": "the newest state", "content": {"application/json": {"schema": {
                "type": "object"}}}},
                "503": _json(Refusal, "the bento carries no reference (re-run train and package)")}}},
    })
    return doc
