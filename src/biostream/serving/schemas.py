"""The request and response models of the service (pydantic): `Schemas(spec)` builds the request models for
one model (one optional array per signal the model reads, strict numbers or `null` in `vitals`, or the same
packed as base64 float32 in `vitals_f32`), and an "after" validator (`checks.vitals_array`) checks what a
type cannot say."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    WrapValidator,
    create_model,
    model_validator,
)

from biostream.serving.checks import refuse_non_finite, sent_vitals, unpack_f32, vitals_array
from biostream.serving.spec import ServingSpec

# a JSON number: no strings, no booleans, and no NaN/Infinity (not JSON, but parsers accept them)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
# base64 of one or more whole float32 values (4 bytes each: 12 bytes are 16 characters; 4 end in "==", 8 in "=")
B64_F32 = r"^(?:[A-Za-z0-9+/]{16})*(?:[A-Za-z0-9+/]{6}==|[A-Za-z0-9+/]{11}=)?$"
PatientId = Annotated[str, Field(min_length=1, max_length=128, description="the monitor's patient or bed id")]


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str


AlarmClass = Literal["physiological", "technical"]
CLASS_NOTE = ("physiological: the patient (see the patient); technical: the measurement (check the probe, line or "
              "leads); null when not above the threshold")


CONDITIONS_NOTE = ("technical conditions of the measurement, never a patient alarm: 'new recording: learning "
                   "baseline' (no signal observed long enough for the learned model to read it: the bedside rules "
                   "alarm alone meanwhile), '<signal>: no signal for N s' (a monitored signal read nothing: check the "
                   "probe or line)")


ADVISORY_NOTE = ("a warning that a bedside rule's event is likely soon (a yellow advisory, below the alarms: it never "
                 "delays, replaces or silences one); null where it cannot judge (the window holds too little of the "
                 "signal it reads: metadata.advisory.reads_s) or the model serves none")


class Prediction(BaseModel):
    patient_id: str
    time: datetime = Field(description="the time of the window's last sample, as sent")
    score: float = Field(description="anomaly score, higher = more anomalous; above 0 = above the alarm threshold "
                                     "(a bedside rule held for its duration, or the model's own threshold)")
    alarm: bool = Field(description="score above the calibrated threshold (this second; the k-of-n alarm policy "
                                    "applies over consecutive seconds: see score_series)")
    alarm_class: AlarmClass | None = Field(description=CLASS_NOTE)
    threshold: float
    top_signals: list[str] = Field(description="for an alarm, the signals contributing most, strongest first "
                                               "(empty when the window does not alarm: ask `explain` for any window)")
    conditions: list[str] = Field(default_factory=list, description=CONDITIONS_NOTE)
    advisory: bool | None = Field(default=None, description=ADVISORY_NOTE)
    advisory_reason: str | None = Field(default=None, description="why the advisory is on, in words (\"MAP "
                                        "falling: 71 mmHg, -9 mmHg in 10 min; below 65 within 5 min at this rate\"), "
                                        "or why it cannot judge; null when it is off")
    model: ModelRef


EPISODE_CLASS_NOTE = CLASS_NOTE.replace("; null when not above the threshold", "") + (
    "; advisory: a warning that the rule event of `kind` is likely soon (yellow, never an alarm)")


class Episode(BaseModel):
    """An episode, the one form every path answers: an alarm (physiological or technical), a technical condition
    not read from the signals, or an advisory; a stream's adds its bed and acknowledgement (`StreamEpisode`)."""

    start: datetime
    end: datetime | None = Field(description="exclusive; null while open (a stream's)")
    alarm_class: Literal["physiological", "technical", "advisory"] = Field(description=EPISODE_CLASS_NOTE)
    kind: str | None = Field(None, description="an advisory's rule kind: the bedside rule's event it warns of "
                                               "(configs/alarms.yaml: hypotension, ...); null for an alarm")
    peak_time: datetime | None = Field(None, description="an alarm's highest score (null for an advisory)")
    peak_score: float | None = None
    signals: list[str] = Field(description="an alarm's: the signals contributing most at the peak; an advisory's: "
                                           "the signals it reads")
    reason: str | None = Field(None, description="a technical condition not read from the signals, in words: 'no "
                                                 "valid data from this bed: ...' (the service refuses its data); an "
                                                 "advisory's: what turned it on, at its first second ('MAP falling: "
                                                 "71 mmHg, ...')")
    source: str | None = Field(None, description="an advisory's source: the candidate the registry chose "
                                                 "(metadata: advisory)")


class ConditionEpisode(BaseModel):
    start: datetime
    end: datetime = Field(description="exclusive")
    condition: str = Field(description="`learning_baseline`, or `no_signal:<signal>`")
    message: str = Field(description="what a monitor would show, at the episode's last second")


class SeriesResult(BaseModel):
    patient_id: str
    start: datetime
    seconds: int
    threshold: float
    scores: list[float] = Field(description="one per second: the window ending at that second")
    above_threshold: list[bool]
    alarm: list[bool] = Field(description="after the alarm policy (k of n seconds above threshold, refractory merge), "
                                          "physiological or technical")
    alarm_class: list[AlarmClass | None] = Field(description="per second, the class of its alarm (" + CLASS_NOTE + ")")
    episodes: list[Episode] = Field(description="alarm episodes of both classes, by start")
    conditions: list[ConditionEpisode] = Field(default_factory=list, description="stretches of each technical "
                                               "condition, by start (" + CONDITIONS_NOTE + ")")
    advisory: list[bool] = Field(default_factory=list, description="per second, whether an advisory is on (" +
                                 ADVISORY_NOTE + "); empty when the model serves none")
    advisories: list[Episode] = Field(default_factory=list, description="advisory episodes (class advisory), by "
                                      "start: made as alarm episodes are (the refractory period merges them)")
    alarm_policy: dict[str, int]
    model: ModelRef


class ExplainResult(BaseModel):
    patient_id: str
    time: datetime
    score: float
    threshold: float
    alarm: bool
    alarm_class: AlarmClass | None = Field(description=CLASS_NOTE)
    driver: Literal["rules", "model"] = Field(description="what sets the score: a bedside rule (its floor) or the "
                                                          "learned model")
    method: str
    signals: dict[str, float] = Field(description="contribution per signal, higher = towards anomalous")
    features: dict[str, float] | None = Field(description="contribution per feature (feature-reading models)")
    top_signals: list[str]
    model: ModelRef


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
    safety: dict[str, Any] = Field(description="the floor (the bedside rules that alarm through the model) and whether "
                                               "alarms are classed technical by the technical checks")
    top_signals_method: str = Field(description="how `predict` and `score_series` rank an alarm's signals")
    advisory: dict[str, Any] | None = Field(default=None, description="the advisory served (its source, the rule "
                                            "kinds it covers, the seconds a window must carry, why the registry "
                                            "chose it); null when none is")


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
        signal_type = Annotated[str, Field(max_length=longest, json_schema_extra={"minLength": 8, "pattern": B64_F32}),
                                AfterValidator(unpack_f32)]
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
                return refuse_non_finite(data, handler)

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
        self.WindowInput = Annotated[Window, WrapValidator(refuse_non_finite)]
        self.WindowBatch = Annotated[list[Window], Field(min_length=1, max_length=spec.max_batch_windows),
                                     WrapValidator(refuse_non_finite)]
