"""`params.yaml` as one typed model, validated once when a stage starts (`load_params`), every problem named at once.

Each section is a frozen dataclass here (constrained field types, cross-key checks in `__post_init__`), re-exported
by the package that uses it under the name its code reads (`AlarmPolicy` from `biostream.models.alarms`, ...); a stage
reads `params.alarms`, `params.tune`, .... Every key is required: the file owns the values. The sections live in
this one `core` module so that a stage's code dependencies (`dvc.yaml` deps) stay the packages it reads.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Rate = Annotated[float, Field(ge=0)]
Source = Literal["synthetic", "vitaldb", "recordings", "real"]  # a dataset, as dvc.yaml names its stage's output
CaseSource = Literal["local", "api"]  # where VitalDB cases come from



class ConfigError(ValueError):
    """A config or params file is missing a key or holds a value of the wrong kind (`biostream.core.config`)."""


STRICT = ConfigDict(extra="forbid")  # every section's `__pydantic_config__`: an unknown key is an error
DAY = 86400


# ---------------------------------------------------------------------------------------------------------------
# The sections, in the file's order
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelParams:
    """`labels`."""

    __pydantic_config__ = STRICT

    early_warning_horizon_s: Positive


@dataclass(frozen=True)
class SplitParams:
    """`splits` (patient-level)."""

    __pydantic_config__ = STRICT

    seed: int
    train: Fraction
    val: Fraction
    test: Fraction

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total}")


@dataclass(frozen=True)
class CohortParams:
    """`generate`: the synthetic cohort."""

    __pydantic_config__ = STRICT

    seed: int
    n_patients: Positive
    hours: tuple[PositiveFloat, PositiveFloat]  # [shortest, longest] recording
    icu_fraction: Fraction  # patients monitored in the ICU (HR, SpO2, impedance RR); the rest are in the operating room
    nibp_fraction: Fraction  # operating-room patients with a cuff instead of an arterial line
    warmup_s: Count
    anomalies_per_hour: Rate
    artefacts_per_hour: Rate
    min_gap_s: Count
    gaps_per_hour: Rate
    gap_s: tuple[PositiveFloat, PositiveFloat]
    absent_signal_probability: dict[str, Fraction]

    def __post_init__(self) -> None:
        for key in ("hours", "gap_s"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"{key}: low {lo} is above high {hi}")
        if self.hours[0] * 3600 <= self.warmup_s:
            raise ValueError(f"the shortest recording (hours: {self.hours[0]} h) must be longer than warmup_s "
                             f"({self.warmup_s} s); raise hours or lower warmup_s")


@dataclass(frozen=True)
class QueryParams:
    """`ingest_vitaldb.query`: which cases of the API's list are fetched."""

    __pydantic_config__ = STRICT

    required_signals: tuple[str, ...]
    min_duration_h: Rate
    anesthesia_types: tuple[str, ...]
    max_cases: Positive


@dataclass(frozen=True)
class IngestParams:
    """`ingest_vitaldb`: where VitalDB cases come from and how they are fetched and resampled."""

    __pydantic_config__ = STRICT

    sources: tuple[CaseSource, ...]
    local_dir: Path
    case_ids: tuple[int, ...]
    query: QueryParams
    api_url: str
    dataset_version: str
    cache_dir: Path
    interval_s: Positive  # whole seconds
    carry_forward_s: Count
    workers: Positive
    timeout_s: PositiveFloat
    retries: Count
    backoff_s: Rate
    require_data: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))  # (frozen) one spelling of the base URL


@dataclass(frozen=True)
class RecordingsParams:
    """`ingest_recordings` (your recordings) or `ingest_real` (the project's real reference recordings)."""

    __pydantic_config__ = STRICT

    folder: Path
    time_column: str | None
    carry_forward_s: Count
    hold_s: dict[str, Count]
    max_hours: PositiveFloat
    require_data: bool


@dataclass(frozen=True)
class SourceParams:
    """`sources`: which datasets the models learn from, and which they are scored on."""

    __pydantic_config__ = STRICT

    train: Annotated[tuple[Source, ...], Field(min_length=1)]
    evaluate: tuple[Source, ...]


@dataclass(frozen=True)
class WindowGeometry:
    """What a model sees of the history behind a scored second.

    `window_s` seconds in all (what a request carries); the last `recent_s` described in detail; the
    whole window summarised in blocks of `block_s` seconds (context: how the recent part compares with
    the patient's own earlier values); the last `sequence_s` seconds, in steps of `sequence_step_s`, as the
    LSTM autoencoder's sequence."""

    window_s: int
    recent_s: int
    block_s: int
    sequence_s: int
    sequence_step_s: int

    def __post_init__(self) -> None:
        problems = []
        if not 8 <= self.recent_s <= self.window_s:
            problems.append(f"recent_s ({self.recent_s}) must be within [8, window_s ({self.window_s})]")
        if self.block_s < 1 or self.window_s % self.block_s:
            problems.append(f"window_s ({self.window_s}) must be a multiple of block_s ({self.block_s})")
        if not 1 <= self.sequence_s <= self.window_s or self.sequence_s % max(self.sequence_step_s, 1):
            problems.append(f"sequence_s ({self.sequence_s}) must be <= window_s and a multiple of "
                            f"sequence_step_s ({self.sequence_step_s})")
        if problems:
            raise ConfigError("window geometry: " + "; ".join(problems))


@dataclass(frozen=True)
class FeaturizeParams:
    """`featurize`: the window geometry (`biostream.features.windows.WindowGeometry`), what a signal needs to be
    read (`biostream.features.readiness.Readiness`), and the strides between scored seconds."""

    __pydantic_config__ = STRICT

    window_s: Positive
    recent_s: Positive
    block_s: Positive
    sequence_s: Positive
    sequence_step_s: Positive
    min_history_s: Count
    min_observed: Fraction
    train_stride_s: Positive
    eval_stride_s: Positive

    def __post_init__(self) -> None:
        self.geometry  # noqa: B018 (its checks)
        if self.min_history_s > self.window_s:
            raise ValueError(f"min_history_s ({self.min_history_s}) must be at most window_s ({self.window_s})")

    @property
    def geometry(self) -> WindowGeometry:
        return WindowGeometry(self.window_s, self.recent_s, self.block_s, self.sequence_s, self.sequence_step_s)

    def stride_by_split(self, learned_from: bool = True) -> dict[str, int]:
        """Seconds between scored rows per split: a source the models learn from scores every `train_stride_s`-th
        second of its training patients; every other second, and every second of a source only evaluated on."""
        train = self.train_stride_s if learned_from else self.eval_stride_s
        return {"train": train, "val": self.eval_stride_s, "test": self.eval_stride_s}


@dataclass(frozen=True)
class AlarmPolicy:
    """`alarms`: k of n seconds above threshold, refractory period, event tolerance."""

    __pydantic_config__ = STRICT

    k: Positive
    n: Positive
    refractory_s: Count
    tolerance_s: Count

    def __post_init__(self) -> None:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) of the last n ({self.n}) seconds: k must be at most n")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class SafetyParams:
    """`safety`: what every learned detector keeps from the bedside rules."""

    __pydantic_config__ = STRICT

    floor: bool  # the rules alarm through every learned detector
    technical: bool  # alarms whose driving signal shows an artefact are technical
    cap: PositiveFloat  # above its threshold a learned score counts at most this many rule units


@dataclass(frozen=True)
class ObjectiveParams:
    """`objective` (with the rules' weights: `biostream.models.objective.Objective`)."""

    __pydantic_config__ = STRICT

    metric: str  # a path into the metrics
    other_weight: Rate  # a missed physiological event of a kind no rule defines (a drift, a level shift)

    def __post_init__(self) -> None:
        if not self.metric.startswith(("physiological.", "technical.", "rule_events.", "point.")):
            raise ValueError(f"metric '{self.metric}' is not a path into the metrics (physiological.weighted_f1, "
                             "technical.event_f1, rule_events.recall, point.auprc, ...)")


@dataclass(frozen=True)
class ThresholdParams:
    """`threshold`: calibrated on validation patients."""

    __pydantic_config__ = STRICT

    method: Literal["best_objective", "alarm_rate"]
    target_alarm_rate: Annotated[float, Field(gt=0, lt=1)]
    real_source: Source | None  # real recordings whose own alarms cap the threshold (None: no cap)
    max_own_alarms_per_hour: Rate  # alarm episodes per patient-hour on them


@dataclass(frozen=True)
class TuneParams:
    """`tune` (what a study maximises is `objective`)."""

    __pydantic_config__ = STRICT

    n_trials: dict[str, Positive]  # per detector
    timeout_s: PositiveFloat
    seed: int
    storage: str
    workers: Positive  # processes of the DVC stage's study (more can join from other machines: docs/scaling-out.md)
    heartbeat_s: PositiveFloat  # a running trial's heartbeat; a trial silent for grace_s is failed and re-queued
    grace_s: PositiveFloat
    max_retry: Count  # re-queues of one trial whose worker died

    def __post_init__(self) -> None:
        if not self.heartbeat_s < self.grace_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s:g}) must be below grace_s ({self.grace_s:g}), or a "
                             "live worker's trial would be failed as dead")
        if self.workers > 1 and self.storage.startswith("sqlite"):
            raise ValueError(f"workers is {self.workers} but storage is {self.storage}: several workers need a "
                             "database server (tune.storage: postgresql://user@host/db; docs/scaling-out.md); sqlite "
                             "serialises their writes and cannot be reached from another machine")


@dataclass(frozen=True)
class RegisterSafety:
    """`register.safety`: the floor a candidate must keep to become champion."""

    __pydantic_config__ = STRICT

    baseline: str  # the evaluated detector whose recall per clinical kind is the floor
    margin: Annotated[float, Field(ge=0, lt=1)]  # recall it may lose against the baseline, per kind
    real_sources: tuple[Source, ...]  # real recordings a candidate must live with (those evaluated)
    max_own_alarms_per_hour: Rate  # its own alarm episodes per patient-hour on each of them


@dataclass(frozen=True)
class RegisterParams:
    """`register` (the metric a champion must improve is `objective.metric`)."""

    __pydantic_config__ = STRICT

    model_name: str
    source: Source
    candidates: Annotated[tuple[str, ...], Field(min_length=1)]
    min_improvement: Rate  # a tie always keeps the champion
    lock_timeout_s: PositiveFloat
    lock_url: str | None  # a PostgreSQL URL for the registry lock (a shared server); None: from tracking.uri
    safety: RegisterSafety
    advisory_source: Source  # the dataset whose recordings choose the champion's advisory

    def __post_init__(self) -> None:
        object.__setattr__(self, "lock_url", self.lock_url or None)  # (frozen) an empty value is no URL

    @property
    def baseline(self) -> str:
        return self.safety.baseline

    @property
    def margin(self) -> float:
        return self.safety.margin

    @property
    def real_sources(self) -> tuple[str, ...]:
        return self.safety.real_sources

    @property
    def max_own_alarms_per_hour(self) -> float:
        return self.safety.max_own_alarms_per_hour


@dataclass(frozen=True)
class ServeParams:
    """`serve`: the BentoML service of the champion."""

    __pydantic_config__ = STRICT

    bentoml_home: str
    max_batch_windows: Positive
    max_window_s: Positive
    max_series_s: Positive
    max_missing_fraction: Annotated[float, Field(ge=0, lt=1)]
    max_latency_ms: Positive
    top_signals: Positive
    max_body_mb: PositiveFloat
    workers: Positive
    max_concurrency: Positive  # requests one worker serves at once; more are refused (429, Retry-After, audited)
    worker_memory_mb: Positive  # memory a worker may take beyond its loaded model: a request needing more fails alone


@dataclass(frozen=True)
class Retention:
    """`stream.retention`."""

    __pydantic_config__ = STRICT

    seconds_days: Positive  # scored seconds (the bulk: ~86,400 rows per bed-day)
    episodes_days: Positive  # alarm episodes
    audit_days: Positive  # the audit trail
    every_s: Positive  # how often a service on sqlite sweeps (PostgreSQL: the owner's `biostream retention`)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def cutoffs(self, now: float) -> dict[str, int]:
        """Seconds since the epoch before which each kind goes (midnights UTC)."""
        today = int(now) // DAY * DAY
        return {"seconds": today - self.seconds_days * DAY, "episodes": today - self.episodes_days * DAY,
                "audit": today - self.audit_days * DAY}


# `biostream retention` run where no params.yaml is, and a serving spec made before retention existed
DEFAULT_RETENTION = Retention(seconds_days=7, episodes_days=365, audit_days=365, every_s=3600)


@dataclass(frozen=True)
class MonitorParams:
    """`stream.monitor`: the live patients against the model's training reference (docs/monitoring.md)."""

    __pydantic_config__ = STRICT

    period_s: Positive  # the rolling period read: stored seconds of its beds, episodes opened in it
    every_s: Positive  # how often the service checks (its /metrics gauges, GET /monitoring, the board's header)
    max_beds: Positive  # beds read per check (a seeded sample when more have seconds in the period)
    min_seconds: Positive  # fewer stored seconds in the period: no drift alert (too little to tell)
    psi_alert: PositiveFloat  # a PSI above this and above what as many training patients reach: drifted
    missing_alert: Fraction  # a signal's missing share above the reference's by more than this: an alert
    alarm_rate_factor: PositiveFloat  # episodes per bed-hour above this times the validation rate: an alert
    recall_alert: Fraction  # live recall of the bedside rules' events below this: an alert

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# a serving spec made before monitoring existed
DEFAULT_MONITOR = MonitorParams(period_s=3600, every_s=30, max_beds=200, min_seconds=600, psi_alert=0.25,
                                missing_alert=0.2, alarm_rate_factor=3.0, recall_alert=0.9)

STORE_ENV = "BIOSTREAM_STREAM_STORE"  # overrides stream.store where the service runs (a PostgreSQL URL, ...)
REDIS_ENV = "BIOSTREAM_REDIS_URL"  # overrides stream.redis_url


@dataclass(frozen=True)
class StreamParams:
    """`stream`: the bedside-stream settings the service carries (in its serving spec)."""

    __pydantic_config__ = STRICT

    store: str  # SQLAlchemy URL of the stream store
    late_s: Count  # a late sample within this many seconds of a bed's newest second is merged; older is refused
    silent_s: Positive  # a bed without a message for this long is closed; a gap this long starts a new recording
    max_message_s: Positive  # seconds per bed in one message
    max_message_beds: Positive  # items (bed x stretch of seconds) in one message
    max_message_bed_s: Positive  # bed-seconds (rows) in one message, all beds together: bounds its memory
    max_skew_s: Count  # a second later than the server's clock by more than this is refused (a gateway's clock)
    state_cache_mb: Positive  # beds' histories a process keeps in memory; beyond, the least recent are read again
    ack_silence_s: Positive  # an acknowledgement silences an open alarm this long; still open after: it alarms again
    ack_worsening: PositiveFloat  # an acknowledged alarm whose peak score rises by this much alarms again at once
    redis_url: str | None  # the scale path's Redis (biostream.serving.streaming.redis_path); None: in-process only
    shards: Positive  # Redis input streams (a bed's messages go to one, by its id); one consumer owns a shard at a time
    retention: Retention  # how long seconds, episodes and audit entries are kept
    monitor: MonitorParams  # drift, missingness, alarm rate and live recall against the model's reference

    def __post_init__(self) -> None:
        object.__setattr__(self, "redis_url", self.redis_url or None)  # (frozen) an empty value is no Redis

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamParams:
        return cls(**{**d, "retention": Retention(**{**asdict(DEFAULT_RETENTION), **d.get("retention", {})}),
                      "monitor": MonitorParams(**{**asdict(DEFAULT_MONITOR), **d.get("monitor", {})})})

    def with_environment(self) -> StreamParams:
        """These params with the store and Redis URLs the environment sets (`BIOSTREAM_STREAM_STORE`,
        `BIOSTREAM_REDIS_URL`): where a service or consumer runs decides where it writes."""
        return replace(self, store=os.environ.get(STORE_ENV) or self.store,
                       redis_url=os.environ.get(REDIS_ENV) or self.redis_url)


@dataclass(frozen=True)
class TrackingParams:
    """`tracking`: MLflow's store."""

    __pydantic_config__ = STRICT

    uri: str
    experiment: str
    artifact_root: str  # a folder, or a URI (s3://..., mlflow-artifacts:/...)

    @property
    def server(self) -> bool:
        """An MLflow tracking server (REST): it creates runs' artifact locations itself (proxied or its root)."""
        return self.uri.startswith(("http://", "https://"))

    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: the server's default for a server, else `artifact_root`
        (a local folder is created and made absolute: every stage, wherever its cwd, writes to the same place)."""
        if self.server:
            return None
        if "://" in self.artifact_root or self.artifact_root.startswith("mlflow-artifacts:"):
            return self.artifact_root
        root = Path(self.artifact_root)
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve().as_uri()


class Params(BaseModel):
    """The whole of `params.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    labels: LabelParams
    splits: SplitParams
    generate: CohortParams
    ingest_vitaldb: IngestParams
    ingest_recordings: RecordingsParams
    ingest_real: RecordingsParams
    sources: SourceParams
    featurize: FeaturizeParams
    detectors: dict[str, dict[str, Any] | None]  # fixed hyperparameters per detector (configs/search_spaces: the rest)
    alarms: AlarmPolicy
    safety: SafetyParams
    objective: ObjectiveParams
    threshold: ThresholdParams
    tune: TuneParams
    register_: RegisterParams = Field(alias="register")  # (`register` is a name pydantic's BaseModel keeps)
    serve: ServeParams
    stream: StreamParams
    tracking: TrackingParams

    def to_dict(self) -> dict[str, Any]:
        """The validated values as params.yaml writes them (what a tune worker process reads back)."""
        return self.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------------------------------------------------------
# Validation and its messages
# ---------------------------------------------------------------------------------------------------------------

T = TypeVar("T")


def _section(kind: Any) -> Any:
    """The dataclass or model a field's type holds (through `X | None`), else None."""
    for candidate in (kind, *typing.get_args(kind)):
        if isinstance(candidate, type) and (dataclasses.is_dataclass(candidate) or issubclass(candidate, BaseModel)):
            return candidate
    return None


def fields_of(kind: Any) -> dict[str, Any]:
    """A section's keys (as params.yaml spells them) and their types."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        hints = typing.get_type_hints(kind)
        return {f.alias or name: hints[name] for name, f in kind.model_fields.items()}
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return {f.name: hints[f.name] for f in dataclasses.fields(kind)}
    return {}


def _known(kind: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys expected at `loc` (for an unknown key's message)."""
    for part in loc:
        kind = _section(fields_of(_section(kind)).get(str(part)))
        if kind is None:
            return []
    return list(fields_of(_section(kind)))


def _message(where: str | Path, kind: Any, error: ValidationError) -> str:
    """Every problem, each with its key and the fix."""
    lines, gaps = [], []
    for e in error.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc)
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            known = _known(kind, loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            lines.append(f"{key}: unknown key; {hint}the keys here are {', '.join(known)}")
        elif e["type"] in ("missing", "missing_argument"):
            gaps.append(f"{key}: missing")
        elif e["type"] == "value_error":  # a check across keys (e.g. splits summing to 1)
            message = e["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {message}" if key else message)
        else:
            lines.append(f"{key or 'the file'}: {e['msg']} (got {e.get('input')!r})")
    if gaps:  # every key is written in the file: none has a default in the code
        lines += gaps
        lines[-1] += " (every key of params.yaml is required; the repository's params.yaml shows each with its meaning)"
    return f"{where}: " + "; ".join(lines)


def _check(kind: type[T], raw: Any, where: str | Path) -> T:
    try:
        return TypeAdapter(kind).validate_python(raw)
    except ValidationError as error:
        raise ConfigError(_message(where, kind, error)) from None


def validate(raw: dict[str, Any], path: str | Path = "params.yaml") -> Params:
    """`raw` (params.yaml's mapping) as `Params`, or a `ConfigError` naming every problem."""
    return _check(Params, raw, path)


def section(kind: type[T], raw: Any, where: str = "params.yaml") -> T:
    """One section (`raw`, a mapping) validated into its dataclass, every key required: for code and tests that hold
    one section rather than the whole file (`where` names it in messages)."""
    return _check(kind, raw, where)


def load_params(path: str | Path = "params.yaml") -> Params:
    """`params.yaml` read and validated: the typed model every stage's `run` takes."""
    from biostream.core.config import load_yaml

    return validate(load_yaml(path), path)
