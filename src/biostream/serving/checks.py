"""Input checks of what pydantic parsed, as pure functions: lengths, finiteness, physiological ranges and
missing values, with messages that name the field, the value and the limit; and the `vitals_f32` codec.

`vitals_array` hands the service a float64 array, so nothing is parsed twice.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from biostream.serving.spec import ServingSpec


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


def refuse_non_finite(data: Any, handler: Any) -> Any:
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
