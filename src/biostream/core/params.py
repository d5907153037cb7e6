"""`params.yaml` as one typed model (pydantic), validated once when a stage starts: a value of the wrong type, out of
range, a missing key, or an unknown (misspelt) one is a `ConfigError` naming the file, the key and the fix.

Every key is required (the file owns the values; nothing here has a default for one). The stages' typed views
(`from_params` of each package) read the validated mapping `load_params` returns."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from biostream.core.config import ConfigError, load_yaml

Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Rate = Annotated[float, Field(ge=0)]
Source = Literal["synthetic", "vitaldb", "recordings", "real"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Labels(Section):
    early_warning_horizon_s: Positive


class Splits(Section):
    seed: int
    train: Fraction
    val: Fraction
    test: Fraction

    @model_validator(mode="after")
    def _sums_to_one(self) -> Splits:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {self.train + self.val + self.test}")
        return self


class Generate(Section):
    seed: int
    n_patients: Positive
    hours: tuple[Seconds, Seconds]
    icu_fraction: Fraction
    nibp_fraction: Fraction
    warmup_s: Count
    anomalies_per_hour: Rate
    artefacts_per_hour: Rate
    min_gap_s: Count
    gaps_per_hour: Rate
    gap_s: tuple[Positive, Positive]
    absent_signal_probability: dict[str, Fraction]


class VitalDBQuery(Section):
    required_signals: list[str]
    min_duration_h: Rate
    anesthesia_types: list[str]
    max_cases: Positive


class IngestVitalDB(Section):
    sources: list[Literal["local", "api"]]
    local_dir: str
    case_ids: list[int]
    query: VitalDBQuery
    api_url: str
    dataset_version: str
    cache_dir: str
    interval_s: Positive
    carry_forward_s: Count
    workers: Positive
    timeout_s: Seconds
    retries: Count
    backoff_s: Rate
    require_data: bool


class IngestRecordings(Section):
    folder: str
    time_column: str | None
    carry_forward_s: Count
    hold_s: dict[str, Count]
    max_hours: Seconds
    require_data: bool


class Sources(Section):
    train: list[Source]
    evaluate: list[Source]


class Featurize(Section):
    window_s: Positive
    recent_s: Positive
    block_s: Positive
    sequence_s: Positive
    sequence_step_s: Positive
    min_history_s: Count
    min_observed: Fraction
    train_stride_s: Positive
    eval_stride_s: Positive


class Alarms(Section):
    k: Positive
    n: Positive
    refractory_s: Count
    tolerance_s: Count

    @model_validator(mode="after")
    def _k_of_n(self) -> Alarms:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) of the last n ({self.n}) seconds: k must be at most n")
        return self


class Safety(Section):
    floor: bool
    technical: bool
    cap: Seconds


class Objective(Section):
    metric: str
    other_weight: Rate


class Threshold(Section):
    method: Literal["best_objective", "alarm_rate"]
    target_alarm_rate: Fraction
    real_source: Source | None
    max_own_alarms_per_hour: Rate | None


class Tune(Section):
    n_trials: dict[str, Positive]
    timeout_s: Seconds
    seed: int
    storage: str
    workers: Positive
    heartbeat_s: Positive
    grace_s: Positive
    max_retry: Count


class RegisterSafety(Section):
    baseline: str
    margin: Rate
    real_sources: list[Source]
    max_own_alarms_per_hour: Rate


class Register(Section):
    model_name: str
    source: Source
    candidates: list[str]
    min_improvement: float
    lock_timeout_s: Seconds
    lock_url: str | None
    safety: RegisterSafety


class Serve(Section):
    bentoml_home: str
    max_batch_windows: Positive
    max_window_s: Positive
    max_series_s: Positive
    max_missing_fraction: Fraction
    max_latency_ms: Positive
    top_signals: Positive
    max_body_mb: Seconds
    workers: Positive


class Retention(Section):
    seconds_days: Positive
    episodes_days: Positive
    audit_days: Positive
    every_s: Positive


class Stream(Section):
    store: str
    late_s: Count
    silent_s: Positive
    max_message_s: Positive
    max_message_beds: Positive
    redis_url: str | None
    shards: Positive
    retention: Retention


class Tracking(Section):
    uri: str
    experiment: str
    artifact_root: str


class Params(Section):
    """The whole of `params.yaml`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    labels: Labels
    splits: Splits
    generate: Generate
    ingest_vitaldb: IngestVitalDB
    ingest_recordings: IngestRecordings
    ingest_real: IngestRecordings
    sources: Sources
    featurize: Featurize
    detectors: dict[str, dict[str, Any]]
    alarms: Alarms
    safety: Safety
    objective: Objective
    threshold: Threshold
    tune: Tune
    register_: Register = Field(alias="register")  # (`register` is a name pydantic's BaseModel keeps)
    serve: Serve
    stream: Stream
    tracking: Tracking


def _fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model expects at `loc` (for an unknown key's message)."""
    for part in loc:
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == str(part)), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return [f.alias or name for name, f in model.model_fields.items()]


def _message(path: Path, error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            known = _fields(Params, loc[:-1])
            near = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            lines.append(f"{key}: unknown key; {hint}the keys here are {', '.join(known)}")
        elif e["type"] == "missing":
            lines.append(f"{key}: missing (every key of params.yaml is required; the repository's params.yaml "
                         f"shows it with its meaning)")
        elif e["type"] == "value_error":  # a check across keys (e.g. splits summing to 1)
            lines.append(f"{key}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return f"{path}: " + "; ".join(lines)


def validate(params: dict[str, Any], path: str | Path = "params.yaml") -> Params:
    try:
        return Params.model_validate(params)
    except ValidationError as error:
        raise ConfigError(_message(Path(path), error)) from None


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """`params.yaml` read and validated against `Params` (every problem named at once); the mapping itself, as the
    stages' typed views read it."""
    raw = load_yaml(path)
    validate(raw, path)
    return raw
