"""What the BentoML service does, without BentoML: request schemas, input checks and answers.

`biostream.service` is the thin BentoML layer over this module; everything here is plain Python, tested
without a server, and imports nothing heavy.

* `ServeParams` is `params.yaml: serve`; `ServingSpec` is everything the service knows besides the model
  bundle (registered model name/version/alias, signal units and physiological ranges from
  `configs/signals.yaml`, limits, metrics). The `package` stage stores the spec as the BentoML model's
  metadata, so a bento carries it and needs neither `params.yaml` nor `configs/` to run.
* `Schemas(spec)` builds the pydantic request models for one model: one optional array per signal the
  model reads, strict numbers or `null` (`vitals`), or the same packed as base64 float32 (`vitals_f32`,
  `pack_f32`/`unpack_f32`), and an "after" validator (`vitals_array`) that checks what a
  type cannot say (same lengths, finiteness, physiological range, missing values) with messages that name
  the field, the value and the limit, and hands the service a float64 array so nothing is parsed twice.
* `Scorer` answers `predict`, `score_series`, `explain` and `metadata` from a `ModelBundle`.
* `BodyTypes` routes a POST by its Content-Type: JSON to BentoML's endpoints, an Arrow batch on /predict
  to its own handler (`biostream.arrow_windows`), anything else to a 415.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WrapValidator,
    create_model,
    model_validator,
)

from biostream.bundle import ModelBundle, top_signals
from biostream.config import ConfigError, SignalCatalog, require
from biostream.evaluation import alarm_episodes, apply_policy
from biostream.features import feature_signal_weights, recording_windows

BENTO_MODEL = "vitals-anomaly-detector"  # the champion's name in the BentoML model store (`package` imports it)
MLFLOW_MODEL_DIR = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
SPEC_KEY = "serving_spec"  # the BentoML model's metadata key holding the ServingSpec (JSON)

# How `predict` names an alarm's top signals, by detector: the detector's own explanation where it costs well
# under a millisecond per window; for the One-Class SVM, whose kernel SHAP takes ~60 ms per window, occlusion
# (`occlusion_contributions`). `explain` always returns the detector's own explanation.
OCCLUSION = "occlusion: the score's drop when one signal's features are set to their training median (as if the " \
            "signal were missing)"
TOP_SIGNALS_METHODS = {"ocsvm": OCCLUSION}

EXPLAIN_METHODS = {  # what `explain` returns, by detector (see each detector's `_explain`)
    "iforest": "exact tree SHAP of the isolation forest's path length (feature contributions, summed per signal)",
    "ocsvm": "kernel SHAP against a k-means background of training windows (feature contributions, summed per "
             "signal)",
    "lstm_ae": "each signal's share of the masked reconstruction error (they sum to the score)",
    "clinical": "per signal, its alarm rules' sustained relative exceedance (the score is the largest)",
}
PER_SIGNAL_EXPLAIN = "; one model per signal: the contributions of the signal's model that gave the score"


def explain_method(detector: Any) -> str:
    """What `explain` returns for this fitted detector."""
    per_signal = PER_SIGNAL_EXPLAIN if getattr(detector, "per_signal", False) else ""
    return EXPLAIN_METHODS.get(detector.name, "") + per_signal


@dataclass(frozen=True)
class ServeParams:
    """`params.yaml: serve`."""

    bentoml_home: str
    max_batch_windows: int
    max_window_s: int
    max_series_s: int
    max_missing_fraction: float
    max_latency_ms: int
    top_signals: int
    workers: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ServeParams:
        w = "params.yaml: serve"
        sec = require(params, "serve", "params.yaml")
        out = cls(
            bentoml_home=str(require(sec, "bentoml_home", w)),
            max_batch_windows=int(require(sec, "max_batch_windows", w)),
            max_window_s=int(require(sec, "max_window_s", w)),
            max_series_s=int(require(sec, "max_series_s", w)),
            max_missing_fraction=float(require(sec, "max_missing_fraction", w)),
            max_latency_ms=int(require(sec, "max_latency_ms", w)),
            top_signals=int(require(sec, "top_signals", w)),
            workers=int(require(sec, "workers", w)),
        )
        if min(out.max_batch_windows, out.max_window_s, out.max_series_s, out.max_latency_ms, out.top_signals,
               out.workers) < 1:
            raise ConfigError(f"{w}: max_batch_windows, max_window_s, max_series_s, max_latency_ms, top_signals and "
                              "workers must be >= 1")
        if not 0.0 <= out.max_missing_fraction < 1.0:
            raise ConfigError(f"{w}.max_missing_fraction: must be in [0, 1), got {out.max_missing_fraction}")
        return out


@dataclass(frozen=True)
class ServingSpec:
    """What the service knows besides the bundle; JSON-able (the BentoML model's metadata)."""

    model_name: str
    model_version: str
    model_alias: str
    model_uri: str
    detector: str
    signals: tuple[str, ...]
    units: dict[str, str]
    valid: dict[str, tuple[float, float]]
    window_s: int  # seconds of history the model reads (what a window must carry at least)
    max_window_s: int
    max_batch_windows: int
    max_series_s: int
    max_missing_fraction: float
    max_latency_ms: int
    top_signals: int
    workers: int
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, bundle: ModelBundle, catalog: SignalCatalog, serve: ServeParams, *, model_name: str,
              model_version: str, model_alias: str, model_uri: str, metrics: Mapping[str, float]) -> ServingSpec:
        signals = tuple(bundle.pipeline.signals)
        window_s = bundle.pipeline.input_length(bundle.detector.input_view)
        if serve.max_window_s < window_s:
            raise ConfigError(f"params.yaml: serve.max_window_s ({serve.max_window_s}) is shorter than the "
                              f"{window_s} s the {bundle.detector.name} model reads; raise it to at least {window_s}")
        return cls(model_name, str(model_version), model_alias, model_uri, bundle.detector.name, signals,
                   {s: catalog[s].unit for s in signals}, {s: tuple(catalog[s].valid) for s in signals}, window_s,
                   serve.max_window_s, serve.max_batch_windows, serve.max_series_s, serve.max_missing_fraction,
                   serve.max_latency_ms, serve.top_signals, serve.workers, dict(metrics))

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, 1) lower and upper physiological limits, in signal order."""
        limits = np.array([self.valid[s] for s in self.signals])
        return limits[:, :1], limits[:, 1:]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signals"] = list(self.signals)
        d["valid"] = {k: list(v) for k, v in self.valid.items()}
        return d

    @classmethod
    def of_model(cls, info_metadata: Mapping[str, Any]) -> ServingSpec:
        """The spec the `package` stage stored in a BentoML model's metadata (`model.info.metadata`)."""
        return cls.from_dict(json.loads(info_metadata[SPEC_KEY]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServingSpec:
        d = dict(d)
        d["signals"] = tuple(d["signals"])
        d["valid"] = {k: (float(v[0]), float(v[1])) for k, v in d["valid"].items()}
        return cls(**d)


def bundle_dir(mlflow_model: str | Path) -> Path:
    """The `ModelBundle` folder inside a logged BioStream pyfunc model (its `bundle` artifact, per MLmodel)."""
    mlflow_model = Path(mlflow_model)
    mlmodel = mlflow_model / "MLmodel"
    if not mlmodel.is_file():
        raise FileNotFoundError(f"{mlflow_model}: no MLmodel file; is this an MLflow model?")
    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")).get("flavors") or {}).get("python_function", {})
    rel = ((flavor.get("artifacts") or {}).get("bundle") or {}).get("path")
    if not rel:
        raise FileNotFoundError(f"{mlmodel}: no `bundle` artifact; not a BioStream model (biostream.pyfunc)")
    return mlflow_model / rel


# --------------------------------------------------------------------------------------------------
# Input checks (pure functions on what pydantic parsed)
# --------------------------------------------------------------------------------------------------


def vitals_array(vitals: Mapping[str, Sequence[float | None] | np.ndarray | None], spec: ServingSpec, *,
                 max_len: int, what: str, field: str = "vitals") -> np.ndarray:
    """(S, T) float64 array, NaN for missing (null), of per-signal arrays; signals not sent are missing
    throughout. A "window" shorter than the model's `window_s` is the start of a recording: it is padded with
    missing values before its first second (as the evaluate stage scores the first seconds of a patient), and
    the missing-value limit applies to the seconds sent. Raises ValueError naming the field, the value and the
    limit. Numbers are already finite (the schema refuses NaN and Infinity: `Number`, `unpack_f32`). `field` is
    the request field that carried the arrays (`vitals`, or `vitals_f32` unpacked), for the messages."""
    absent_token = "null" if field == "vitals" else "NaN"
    rows = [vitals.get(s) for s in spec.signals]
    sent = [(s, r) for s, r in zip(spec.signals, rows, strict=True) if r is not None]
    if not sent:
        raise ValueError(f"{field}: no signal sent; send per-signal arrays for some of {', '.join(spec.signals)}")
    first, n = sent[0][0], len(sent[0][1])
    for k, r in sent:
        if len(r) != n:
            raise ValueError(f"{field}.{k} has {len(r)} values but {field}.{first} has {n}: every signal must cover "
                             f"the same seconds (1 Hz, oldest first; {absent_token} where missing)")
    if n < 1:
        raise ValueError(f"{field}.{first} is empty: send at least one value per signal (1 Hz, oldest first)")
    if n > max_len:
        raise ValueError(f"{field}.{first} has {n} values; at most {max_len} are accepted per {what} "
                         f"(serve.max_{'series' if what == 'series' else 'window'}_s)")
    absent = [None] * n
    out = np.array([absent if r is None else r for r in rows], dtype=np.float64)  # None -> NaN, in one pass
    lo, hi = spec.bounds
    bad = (out < lo) | (out > hi)  # NaN compares False: a null is never out of range
    if bad.any():
        i, j = (int(k[0]) for k in np.nonzero(bad))
        sig, v = spec.signals[i], out[i, j]
        count = int(bad.sum())
        raise ValueError(f"{field}.{sig}[{j}] = {v:g} {spec.units[sig]} is outside the physiological range "
                         f"[{spec.valid[sig][0]:g}, {spec.valid[sig][1]:g}] (configs/signals.yaml); send "
                         f"{absent_token} for a missing or implausible value"
                         + (f" ({count} values are outside)" if count > 1 else ""))
    tail = out[:, -spec.window_s:] if what == "window" else out
    missing = float(np.isnan(tail).mean())
    if missing > spec.max_missing_fraction:
        raise ValueError(too_much_missing(spec, missing, tail.shape[1]))
    if what == "window" and n < spec.window_s:  # a recording younger than the window: nothing before it
        out = np.concatenate([np.full((len(spec.signals), spec.window_s - n), np.nan), out], axis=1)
    return out


def too_much_missing(spec: ServingSpec, fraction: float, read_s: int) -> str:
    """The message for a window or series with more of its values missing than `serve.max_missing_fraction`."""
    return (f"{fraction:.0%} of the values of the {len(spec.signals)} signals over the {read_s} s read are missing "
            f"(limit {spec.max_missing_fraction:.0%}, serve.max_missing_fraction): too little data to score; send "
            f"more of {', '.join(spec.signals)}")


def _refuse_non_finite(data: Any, handler: Any) -> Any:
    """A wrap validator: pydantic's refusal of a JSON `NaN`/`Infinity` ("Input should be a finite number")
    becomes a message that names the value and the fix; any other error passes unchanged."""
    try:
        return handler(data)
    except ValidationError as error:
        for e in error.errors(include_url=False):
            if e["type"] == "finite_number":
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
                raise ValueError(f"{where} is {e['input']}, not a finite number; send null for a missing "
                                 f"value") from None
        raise


def unpack_f32(text: str) -> np.ndarray:
    """A packed signal (`vitals_f32`): base64 of little-endian float32 values, NaN where missing -> float64
    array. Raises ValueError naming what is wrong and the encoding expected."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"not valid base64 ({error}); a packed signal is the base64 of its little-endian float32 "
                         f"values, NaN where missing") from None
    if len(raw) % 4:
        raise ValueError(f"decodes to {len(raw)} bytes, not a whole number of float32 values (4 bytes each); "
                         f"pack little-endian float32, NaN where missing")
    values = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    infinite = np.isinf(values)
    if infinite.any():
        j = int(np.argmax(infinite))
        raise ValueError(f"value [{j}] is {values[j]:g}, not a finite number; pack NaN for a missing value")
    return values


def pack_f32(values: Sequence[float] | np.ndarray) -> str:
    """One signal's values (NaN where missing) as `vitals_f32` carries them: what a client sends; `unpack_f32`
    reads it back exactly (float32 keeps ~7 significant digits, far finer than any monitor's resolution)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def sent_vitals(vitals: BaseModel | None, vitals_f32: BaseModel | None) -> tuple[str, dict[str, Any]]:
    """The field and per-signal arrays of a request that carries exactly one of `vitals` and `vitals_f32`."""
    if (vitals is None) == (vitals_f32 is None):
        raise ValueError("send the signals in `vitals` (arrays of numbers, null where missing) or in `vitals_f32` "
                         "(per signal, base64 of little-endian float32, NaN where missing)"
                         + (", not both" if vitals is not None else ""))
    return ("vitals", vitals.__dict__) if vitals is not None else ("vitals_f32", vitals_f32.__dict__)


# --------------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------------

# a JSON number: no strings, no booleans, and no NaN/Infinity (not JSON, but parsers accept them)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PatientId = Annotated[str, Field(min_length=1, max_length=128, description="the monitor's patient or bed id")]


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str


class Prediction(BaseModel):
    patient_id: str
    time: datetime = Field(description="the time of the window's last sample, as sent")
    score: float = Field(description="anomaly score, higher = more anomalous")
    alarm: bool = Field(description="score above the calibrated threshold (this second; the k-of-n alarm policy "
                                    "applies over consecutive seconds: see score_series)")
    threshold: float
    top_signals: list[str] = Field(description="for an alarm, the signals contributing most, strongest first "
                                               "(empty when the window does not alarm: ask `explain` for any window)")
    model: ModelRef


class Episode(BaseModel):
    start: datetime
    end: datetime = Field(description="exclusive")
    peak_time: datetime
    peak_score: float
    signals: list[str] = Field(description="the signals contributing most at the peak")


class SeriesResult(BaseModel):
    patient_id: str
    start: datetime
    seconds: int
    threshold: float
    scores: list[float] = Field(description="one per second: the window ending at that second")
    above_threshold: list[bool]
    alarm: list[bool] = Field(description="after the alarm policy (k of n seconds above threshold, refractory merge)")
    episodes: list[Episode]
    alarm_policy: dict[str, int]
    model: ModelRef


class ExplainResult(BaseModel):
    patient_id: str
    time: datetime
    score: float
    threshold: float
    alarm: bool
    method: str
    signals: dict[str, float] = Field(description="contribution per signal, higher = towards anomalous")
    features: dict[str, float] | None = Field(description="contribution per feature (feature-reading models)")
    top_signals: list[str]
    model: ModelRef


class BodyTypes:
    """ASGI middleware: a POST body is JSON (BentoML's endpoints), or, on the paths and media types given in
    `handlers`, a body that its own handler answers (an Arrow batch on /predict: `biostream.arrow_windows`).
    Any other Content-Type gets 415 with the fix, before BentoML parses it (its multipart parser answers 500 to
    a multipart type without a boundary). No Content-Type reads as JSON.

    `handlers` maps (path, media type) to a function that returns the handler, an async callable body ->
    (status, JSON bytes); it is looked up per request (the service instance exists once the worker has
    started). A body over `max_body_bytes` gets 413."""

    def __init__(self, app: Any, handlers: Mapping[tuple[str, str], Callable[[], Any]] | None = None,
                 max_body_bytes: int = 64 << 20) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
            handler = self.handlers.get((scope.get("path", ""), media))
            if handler is not None:
                body = await self._body(headers, receive)
                if body is _GONE:
                    return
                if body is None:
                    await _send_json(send, 413, {"error": f"the body is over {self.max_body_bytes} bytes: send at "
                                                          f"most serve.max_batch_windows windows per request"})
                    return
                try:
                    status, answer = await handler()(body)
                except Exception:  # a fault of ours, not of the request: logged, answered as BentoML answers it
                    _log.exception("%s %s failed", media, scope.get("path"))
                    status, answer = 500, {"error": "An unexpected error has occurred, please check the server log."}
                await _send_json(send, status, answer)
                return
            if media not in ("application/json", ""):
                accepted = ["application/json"] + sorted(m for p, m in self.handlers if p == scope.get("path"))
                await _send_json(send, 415, {"error": f"Content-Type '{media}' is not supported here: send the "
                                                      f"request body as {' or '.join(accepted)}"})
                return
        await self.app(scope, receive, send)

    async def _body(self, headers: Mapping[bytes, bytes], receive: Any) -> bytes | object | None:
        """The whole body; None once it is longer than `max_body_bytes`; `_GONE` if the client went away."""
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


_GONE = object()  # `BodyTypes._body`: the client went away
_log = logging.getLogger("biostream")


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Metadata(BaseModel):
    model: ModelRef
    model_uri: str
    detector: str
    threshold: float
    window_s: int = Field(description="seconds of history the model reads: each window carries at least this many")
    signals: list[dict[str, Any]]
    alarm_policy: dict[str, int]
    limits: dict[str, int | float]
    metrics: dict[str, float] = Field(description="the registered version's metrics on the synthetic test patients")
    explain_method: str = Field(description="what `explain` returns")
    top_signals_method: str = Field(description="how `predict` and `score_series` rank an alarm's signals")


class Schemas:
    """The request models for one model (its signals, window length, ranges and limits)."""

    def __init__(self, spec: ServingSpec) -> None:
        self.spec = spec
        fields: dict[str, Any] = {}
        for s in spec.signals:
            lo, hi = spec.valid[s]
            fields[s] = (list[Number | None] | None, Field(
                None, description=f"{s} ({spec.units[s]}), 1 Hz, oldest first, null where missing; physiological "
                                  f"range [{lo:g}, {hi:g}]",
                json_schema_extra={"items": {"anyOf": [{"type": "number", "minimum": lo, "maximum": hi},
                                                       {"type": "null"}]}}))
        self.Vitals = create_model("Vitals", __config__=ConfigDict(extra="forbid"), **fields)
        longest = 4 * ((4 * max(spec.max_window_s, spec.max_series_s) + 2) // 3)  # base64 characters
        signal_type = Annotated[str, Field(max_length=longest), AfterValidator(unpack_f32)]
        packed = {s: (signal_type | None, Field(None, description=f"{s} ({spec.units[s]}), 1 Hz, oldest first: base64 "
                                                                  f"of little-endian float32, NaN where missing"))
                  for s in spec.signals}
        self.PackedVitals = create_model("PackedVitals", __config__=ConfigDict(extra="forbid"), **packed)
        vitals_type, packed_type = self.Vitals, self.PackedVitals
        packed_note = ("the same arrays as `vitals`, packed: parsed several times faster (for gateways that batch); "
                       "send `vitals` or `vitals_f32`, not both")

        class Window(BaseModel):
            model_config = ConfigDict(extra="forbid")
            patient_id: PatientId
            time: datetime = Field(description="the time of the last sample (ISO 8601, or seconds since the epoch)")
            vitals: vitals_type | None = Field(
                None, description=f"per-signal arrays of equal length, up to {spec.max_window_s} values; the model "
                                  f"reads the last {spec.window_s} (fewer: the recording started less than "
                                  f"{spec.window_s} s ago)")
            vitals_f32: packed_type | None = Field(None, description=packed_note)
            _array: np.ndarray = PrivateAttr()

            @model_validator(mode="after")
            def _check(self) -> Window:
                sent, rows = sent_vitals(self.vitals, self.vitals_f32)
                self._array = vitals_array(rows, spec, max_len=spec.max_window_s, what="window",
                                           field=sent)[:, -spec.window_s:]
                return self

            @property
            def array(self) -> np.ndarray:
                return self._array

        class Series(BaseModel):
            model_config = ConfigDict(extra="forbid")
            patient_id: PatientId
            start: datetime = Field(description="the time of the first sample")
            vitals: vitals_type | None = Field(None, description=f"per-signal arrays of 1 to {spec.max_series_s} "
                                                                 f"values")
            vitals_f32: packed_type | None = Field(None, description=packed_note)
            _array: np.ndarray = PrivateAttr()

            # a Series is only ever a whole request, so its NaN/Infinity message sits on the class (a Window is
            # also a batch item: there the message is wrapped once per request, see WindowInput/WindowBatch)
            @model_validator(mode="wrap")
            @classmethod
            def _finite(cls, data: Any, handler: Any) -> Any:
                return _refuse_non_finite(data, handler)

            @model_validator(mode="after")
            def _check(self) -> Series:
                sent, rows = sent_vitals(self.vitals, self.vitals_f32)
                self._array = vitals_array(rows, spec, max_len=spec.max_series_s, what="series", field=sent)
                return self

            @property
            def array(self) -> np.ndarray:
                return self._array

        self.Window = Window  # a batch item; `WindowInput` is one window as a request's argument
        self.Series = Series
        # NaN/Infinity messages: one wrap validator per request, not per window (~7 us each)
        self.WindowInput = Annotated[Window, WrapValidator(_refuse_non_finite)]
        self.WindowBatch = Annotated[list[Window], Field(min_length=1, max_length=spec.max_batch_windows),
                                     WrapValidator(_refuse_non_finite)]


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


def occlusion_contributions(bundle: ModelBundle, view: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n, S) per-signal contributions of a feature-reading model by occlusion: each window's score minus its
    score with one signal's features at their training median (0 after robust scaling; what the model sees
    when that signal is missing). One batched model call of n x S rows: ~1 ms for one window of the
    One-Class SVM, against ~60 ms for its kernel SHAP."""
    signals = list(bundle.pipeline.signals)
    uses = feature_signal_weights(signals) > 0  # (F, S): the features computed from each signal
    occluded = np.repeat(view[:, None, :], len(signals), axis=1)  # (n, S, F)
    for j in range(len(signals)):
        occluded[:, j, uses[:, j]] = 0.0
    rescored = bundle.detector.decision_function(occluded.reshape(-1, view.shape[1])).reshape(len(view), -1)
    return scores[:, None] - rescored


class Scorer:
    """A loaded bundle with its spec: the service's whole behaviour."""

    def __init__(self, bundle: ModelBundle, spec: ServingSpec) -> None:
        if tuple(bundle.pipeline.signals) != spec.signals:
            raise ValueError(f"the serving spec's signals {spec.signals} differ from the model's "
                             f"{tuple(bundle.pipeline.signals)}: re-run the package stage")
        self.bundle = bundle
        self.spec = spec
        self.model = ModelRef(name=spec.model_name, version=spec.model_version, alias=spec.model_alias)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def predict(self, windows: Sequence[Any]) -> list[Prediction]:
        """Windows as validated by `Schemas.Window` (they carry `.array`)."""
        if not windows:
            return []
        x = np.stack([w.array for w in windows])
        view = self.bundle.pipeline.view(self.bundle.detector.input_view, x)  # built once: score and explain
        scores = self.bundle.detector.decision_function(view)
        alarm = scores > self.threshold
        top: list[list[str]] = [[] for _ in windows]
        if alarm.any():
            idx = np.flatnonzero(alarm)
            for i, names in zip(idx, self.top_signals(view[idx], scores[idx]), strict=True):
                top[i] = names
        # validated already (the windows, the model's finite scores): constructed without validating again,
        # which took ~8 % of a busy service's time holding the GIL
        threshold = self.threshold
        return [Prediction.model_construct(patient_id=w.patient_id, time=w.time, score=float(s), alarm=bool(a),
                                           threshold=threshold, top_signals=t, model=self.model)
                for w, s, a, t in zip(windows, scores, alarm, top, strict=True)]

    def top_signals(self, view: np.ndarray, scores: np.ndarray) -> list[list[str]]:
        """The signals contributing most to each row of an input view (`TOP_SIGNALS_METHODS`)."""
        if self.spec.detector in TOP_SIGNALS_METHODS:
            return top_signals(occlusion_contributions(self.bundle, view, scores), self.spec.signals,
                               self.spec.top_signals)
        return self.bundle.explain_view(view).top_signals(self.spec.top_signals)

    def series_scores(self, values: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Scores of the windows ending at every second of a recording (S, T), NaN before it starts (as the
        evaluate stage scores test patients)."""
        t = values.shape[1]
        parts = [self.bundle.score(recording_windows(values.T, self.spec.window_s, np.arange(a, min(a + chunk, t))))
                 for a in range(0, t, chunk)]
        return np.concatenate(parts)

    def score_series(self, series: Any) -> SeriesResult:
        values = series.array
        scores = self.series_scores(values)
        t = np.arange(len(scores))
        pid = np.zeros(len(scores), dtype=np.int64)
        alarm = apply_policy(pid, t, scores, self.threshold, self.bundle.policy).astype(bool)
        episodes = []
        for ep in alarm_episodes(pid, t, alarm).itertuples():
            a, b = int(ep.start_s), int(ep.end_s)
            peak = a + int(np.argmax(scores[a:b]))
            window = recording_windows(values.T, self.spec.window_s, np.array([peak]))
            names = self.top_signals(self.bundle.pipeline.view(self.bundle.detector.input_view, window),
                                     scores[peak : peak + 1])[0]
            episodes.append(Episode(start=series.start + timedelta(seconds=a), end=series.start + timedelta(seconds=b),
                                    peak_time=series.start + timedelta(seconds=peak), peak_score=float(scores[peak]),
                                    signals=names))
        return SeriesResult(patient_id=series.patient_id, start=series.start, seconds=len(scores),
                            threshold=self.threshold, scores=scores.tolist(),
                            above_threshold=(scores > self.threshold).tolist(), alarm=alarm.tolist(),
                            episodes=episodes, alarm_policy=self.bundle.policy.to_dict(), model=self.model)

    def explain(self, window: Any) -> ExplainResult:
        x = window.array[None]
        score = float(self.bundle.score(x)[0])
        exp = self.bundle.explain(x)
        features = None if exp.features is None else {k: float(v) for k, v in exp.features.iloc[0].items()}
        return ExplainResult(patient_id=window.patient_id, time=window.time, score=score, threshold=self.threshold,
                             alarm=score > self.threshold, method=explain_method(self.bundle.detector),
                             signals={k: float(v) for k, v in exp.signals.iloc[0].items()}, features=features,
                             top_signals=exp.top_signals(self.spec.top_signals)[0], model=self.model)

    def metadata(self) -> Metadata:
        spec = self.spec
        return Metadata(
            model=self.model, model_uri=spec.model_uri, detector=spec.detector, threshold=self.threshold,
            window_s=spec.window_s,
            signals=[{"name": s, "unit": spec.units[s], "valid": list(spec.valid[s])} for s in spec.signals],
            alarm_policy=self.bundle.policy.to_dict(),
            limits={"max_batch_windows": spec.max_batch_windows, "max_window_s": spec.max_window_s,
                    "max_series_s": spec.max_series_s, "max_missing_fraction": spec.max_missing_fraction,
                    "workers": spec.workers},
            metrics=spec.metrics, explain_method=explain_method(self.bundle.detector),
            top_signals_method=TOP_SIGNALS_METHODS.get(spec.detector, "the detector's explanation (explain_method)"),
        )
