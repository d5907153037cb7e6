"""What a gateway sends to `POST /ingest` (or publishes on a Redis stream): each bed's newest seconds, as JSON
(`parse_json`) or Arrow (`biostream.serving.streaming.arrow_rows.parse_arrow`); many beds and many seconds per
message (docs/streams.md).

Both return the items they could read as `Chunk`s and a `Problem` for each thing they could not, naming its item,
bed, field, value and limit: a bad item loses only itself, a value outside its signal's physiological range only
itself (stored as missing).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from biostream.serving.checks import unpack_f32
from biostream.serving.spec import ServingSpec
from biostream.serving.streaming.answers import MAX_PROBLEMS, Chunk, Problem, Problems
from biostream.serving.streaming.params import StreamParams

ITEM_KEYS = {"bed", "start", "vitals", "vitals_f32"}
# A bed id is an identifier, not a name: it reaches SQL (as a parameter), Redis keys, URLs and logs, so it is
# ASCII letters, digits and `. _ : @ # + -` (a space inside), 1 to 128 characters, starting with a letter or digit.
# No `/` (a path), `%` (an encoding), control or invisible characters, nor look-alike letters of other scripts.
BED_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._:@#+ -]{0,126}[A-Za-z0-9._:@#+-])?")
BED_FORM = "1 to 128 ASCII letters, digits and . _ : @ # + - (a space inside), starting with a letter or digit"
# Seconds since the epoch a stream may carry: 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z (what ISO 8601 can write)
FIRST_SECOND, LAST_SECOND = 0, 253_402_300_799


class MessageError(ValueError):
    """The message as a whole cannot be read (not JSON, no `samples`, too many items); `status` the HTTP status
    it answers (413: larger than a message may be, refused before it is decoded)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ItemError(ValueError):
    """One item cannot be read: its field, the value found and the limit or form expected."""

    def __init__(self, field: str, value: Any, limit: str, message: str) -> None:
        super().__init__(message)
        self.field, self.value, self.limit = field, echoed(value), limit


def echoed(v: Any) -> Any:
    """A value as a message echoes it (an array or object is named, not echoed; a number JSON cannot write, NaN or
    an infinity, as text: every answer is strict JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 63:
        return f"{str(v)[:20]}... ({len(str(v))} digits)"
    return v if isinstance(v, str | int | float | bool) or v is None else type(v).__name__


def is_bed(bed: Any) -> bool:
    return type(bed) is str and BED_ID.fullmatch(bed) is not None


def check_bed(bed: Any, field: str = "bed") -> str:
    """A bed id as sent (an item's, or a URL's); ItemError naming the form if it is not one."""
    if not is_bed(bed):
        shown = bed if not isinstance(bed, str) or len(bed) <= 40 else f"{bed[:40]}... ({len(bed)} characters)"
        raise ItemError(field, shown, BED_FORM, f"{field} is {echoed(shown)!r}: a bed id is {BED_FORM}")
    return bed


def to_second(value: Any, field: str = "start") -> int:
    """A time (ISO 8601 with a zone, or seconds since the epoch, 1970 to 9999) -> whole seconds since the epoch."""
    form = "ISO 8601 with a zone (2026-11-21T10:15:00Z) or seconds since the epoch"
    if isinstance(value, int | float) and not isinstance(value, bool) and (isinstance(value, int)
                                                                         or math.isfinite(value)):
        if FIRST_SECOND <= value <= LAST_SECOND:
            return round(value)
        raise ItemError(field, value, f"{FIRST_SECOND} to {LAST_SECOND}",
                        f"{field} is {value!r} seconds since the epoch, outside 1970-01-01 to 9999-12-31: send "
                        f"a time in that range")
    if isinstance(value, str):
        try:
            t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            t = None
        if t is not None and t.tzinfo is not None:
            return to_second(t.timestamp(), field)
        if t is not None:
            raise ItemError(field, value, form, f"{field} is {value!r}, a time without a zone: add one (Z for UTC)")
    raise ItemError(field, value, form, f"{field} is {echoed(value)!r}, not a time: send {form}")


def time_text(text: str, field: str) -> int:
    """A time as written in a URL's query or on a command line (ISO 8601, or seconds since the epoch) -> seconds."""
    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    return to_second(value, field)


def query_params(query: str, allowed: Collection[str], where: str) -> dict[str, str]:
    """A URL's query string -> its parameters, each given at most once and each one of `allowed` (else ValueError
    naming it and what `where` takes)."""
    takes = ", ".join(sorted(allowed))
    if len(query) > 1000:
        raise ValueError(f"the query string is {len(query)} characters: at most 1000 ({where} takes {takes})")
    q = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0][:40]!r}: {where} takes {takes}")
    twice = sorted(k for k, v in q.items() if len(v) > 1)
    if twice:
        raise ValueError(f"query parameter {twice[0]!r} given {len(q[twice[0]])} times: give it once")
    return {k: v[0] for k, v in q.items()}


def whole_number(text: str, field: str, lo: int, hi: int, what: str) -> int:
    """A whole number from a URL's query, in [lo, hi] (digits only: no sign, exponent or other script's digits)."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(hi)) or not lo <= int(text) <= hi:
        raise ValueError(f"{field} is {text[:20]!r}: ask for a whole number of {what} from {lo} to {hi}")
    return int(text)


def check_ranges(chunks: list[Chunk], spec: ServingSpec, problems: Problems) -> None:
    """Values outside their signal's physiological range become missing, each named (the rest is kept; past
    `MAX_PROBLEMS` only counted). One comparison for the whole message; only the chunks with such a value are looked
    at one by one."""
    if not chunks:
        return
    lo, hi = spec.bounds
    every = np.concatenate([c.values for c in chunks], axis=1)
    if not ((every < lo) | (every > hi)).any():
        return
    for chunk in chunks:
        bad = (chunk.values < lo) | (chunk.values > hi)
        if not bad.any():
            continue
        if len(problems) >= MAX_PROBLEMS:  # the list is full: counted, not named
            problems.total += int(np.count_nonzero(bad))
            chunk.values[bad] = np.nan
            continue
        for i, j in zip(*np.nonzero(bad), strict=True):
            s, v = spec.signals[i], float(chunk.values[i, j])
            problems.append(Problem(chunk.index, chunk.bed, f"vitals.{s}[{j}]", v,
                                    f"[{spec.valid[s][0]:g}, {spec.valid[s][1]:g}] {spec.units[s]}",
                                    f"{s} = {v:g} {spec.units[s]} at bed {chunk.bed!r}'s second {j} is outside the "
                                    f"physiological range (configs/signals.yaml)", "stored as missing"))
        chunk.values[bad] = np.nan


def _number(x: Any) -> bool:
    """A JSON value a vital sign may be: null, or a finite number (not a boolean)."""
    return x is None or (type(x) is float and math.isfinite(x)) or (type(x) is int and -1e300 < x < 1e300)


def parse_item(item: Any, index: int, spec: ServingSpec, params: StreamParams,
               order: Mapping[str, int] | None = None) -> Chunk:
    """One JSON item -> Chunk; ValueError naming the field (its bed is read first, for the message)."""
    extra = set(item) - ITEM_KEYS
    if extra:
        raise ItemError(sorted(extra)[0], None, ", ".join(sorted(ITEM_KEYS)),
                        f"unknown field(s) {', '.join(sorted(extra))}; an item has {', '.join(sorted(ITEM_KEYS))}")
    start = to_second(item.get("start"))
    vitals, packed = item.get("vitals"), item.get("vitals_f32")
    if (vitals is None) == (packed is None):
        raise ItemError("vitals", None, "one of vitals, vitals_f32",
                        "send the signals in `vitals` (arrays of numbers, null where missing) or `vitals_f32` "
                         "(base64 float32 per signal)" + (", not both" if vitals is not None else ""))
    field, arrays = ("vitals", vitals) if vitals is not None else ("vitals_f32", packed)
    if not isinstance(arrays, Mapping) or not arrays:
        raise ItemError(field, arrays, "an object of per-signal arrays",
                        f"{field} must be an object of per-signal arrays, one of {', '.join(spec.signals)}")
    unknown = set(arrays) - set(spec.signals)
    if unknown:
        raise ItemError(f"{field}.{sorted(unknown)[0]}", None, ", ".join(spec.signals),
                        f"{field}: unknown signal(s) {', '.join(sorted(unknown))}; the model reads "
                         f"{', '.join(spec.signals)}")
    rows: dict[str, Any] = {}
    for s, v in arrays.items():
        if field == "vitals_f32":
            if not isinstance(v, str):
                raise ItemError(f"vitals_f32.{s}", v, "base64 of little-endian float32",
                                f"vitals_f32.{s} is {type(v).__name__}, not base64 text")
            try:
                rows[s] = unpack_f32(v)
            except ValueError as error:
                raise ItemError(f"vitals_f32.{s}", None, "base64 of little-endian float32, NaN where missing",
                                f"vitals_f32.{s}: {error}") from None
        else:
            if not isinstance(v, list):
                raise ItemError(f"vitals.{s}", v, "an array of numbers",
                                f"vitals.{s} is {type(v).__name__}, not an array of numbers (null where missing)")
            if not all(map(_number, v)):
                j, x = next((j, x) for j, x in enumerate(v) if not _number(x))
                raise ItemError(f"vitals.{s}[{j}]", x, "a finite number or null",
                                f"vitals.{s}[{j}] is {x!r}, not a finite number; send null for a missing value")
            rows[s] = v
    lengths = {len(r) for r in rows.values()}
    if len(lengths) > 1:
        raise ItemError(field, {s: len(r) for s, r in rows.items()}, "the same length for every signal",
                        f"{field}: the signals have different lengths "
                        f"({', '.join(f'{s}: {len(r)}' for s, r in rows.items())}); "
                         f"every signal covers the same seconds")
    m = lengths.pop()
    if not 1 <= m <= params.max_message_s:
        raise ItemError(field, m, f"1 to {params.max_message_s} seconds (stream.max_message_s)",
                        f"{field} carries {m} seconds; an item carries 1 to {params.max_message_s} "
                         f"(stream.max_message_s)")
    given = np.array(list(rows.values()), dtype=np.float64)  # (k, m); null -> NaN
    if list(rows) == list(spec.signals):
        values = given
    else:
        order = order or {s: i for i, s in enumerate(spec.signals)}
        values = np.full((len(spec.signals), m), np.nan)
        values[[order[s] for s in rows]] = given
    return Chunk(str(item["bed"]), start, values, index)


def bed_of(item: Any) -> str:
    """An item's bed id, checked; ValueError if it has none usable."""
    if not isinstance(item, Mapping):
        raise ItemError("item", item, "an object", f"is {type(item).__name__}, not an object with bed, start and "
                                                   f"vitals")
    return check_bed(item.get("bed"))


def parse_json(body: bytes, spec: ServingSpec, params: StreamParams) -> tuple[list[Chunk], Problems]:
    """`{"samples": [item, ...]}`, an item `{"bed": "bed-4", "start": <time of its first second: ISO 8601 or seconds
    since the epoch>, "vitals": {"hr": [72, 73], "map": [80, null]}}` (or `"vitals_f32"`, as `predict` takes it):
    1 Hz values from `start`, null where missing, a signal left out missing throughout; an item is one bed's
    consecutive seconds."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise MessageError(f"the body is not JSON ({error}); send {{\"samples\": [{{\"bed\", \"start\", "
                           f"\"vitals\"}}, ...]}}") from None
    except RecursionError:
        raise MessageError("the body is JSON nested too deeply to read; a message is {\"samples\": [{\"bed\", "
                           "\"start\", \"vitals\": {\"hr\": [...]}}, ...]}, three levels") from None
    if not isinstance(message, Mapping) or not isinstance(message.get("samples"), list) or set(message) != {"samples"}:
        raise MessageError("send {\"samples\": [{\"bed\": ..., \"start\": ..., \"vitals\": {...}}, ...]}")
    items = message["samples"]
    if len(items) > params.max_message_beds:
        raise MessageError(f"{len(items)} items in one message; at most {params.max_message_beds} "
                           f"(stream.max_message_beds): split it", 413)
    return _items(items, spec, params)


def _items(items: list[Any], spec: ServingSpec, params: StreamParams) -> tuple[list[Chunk], Problems]:
    chunks, problems = _usual_items(items, spec, params), Problems()
    if chunks is None:  # an item out of the usual form: read one by one, each problem named
        chunks = _named_items(items, spec, params, problems)
    bed_s = sum(c.values.shape[1] for c in chunks)
    if bed_s > params.max_message_bed_s:
        raise too_many(bed_s, params)
    check_ranges(chunks, spec, problems)
    return chunks, problems


def too_many(bed_s: int, params: StreamParams) -> MessageError:
    """413: a message of more bed-seconds than `max_message_bed_s` (its memory is bounded by it)."""
    return MessageError(f"{bed_s} bed-seconds in one message; at most {params.max_message_bed_s} "
                        f"(stream.max_message_bed_s, e.g. {params.max_message_bed_s // 60} beds x 60 s): split it "
                        f"into messages of fewer beds or seconds (docs/streams.md, Limits)", 413)


def _named_items(items: list[Any], spec: ServingSpec, params: StreamParams, problems: Problems) -> list[Chunk]:
    chunks = []
    order = {s: i for i, s in enumerate(spec.signals)}
    for k, item in enumerate(items):
        try:
            bed = bed_of(item)
        except ItemError as error:
            problems.append(Problem(k, None, error.field, error.value, error.limit, f"item {k}: {error}",
                                    "nothing of this item"))
            continue
        try:
            chunk = parse_item(item, k, spec, params, order)
        except ItemError as error:
            problems.append(Problem(k, bed, error.field, error.value, error.limit, f"item {k} (bed {bed!r}): {error}",
                                    "nothing of this item", refused=True))
            continue
        chunks.append(chunk)
    return chunks


_USUAL_KEYS = {"bed", "start", "vitals"}
_NUMBER_TYPES = {int, float, type(None)}


def _usual_items(items: list[Any], spec: ServingSpec, params: StreamParams) -> list[Chunk] | None:
    """The items of the usual message, each `{"bed", "start": seconds since the epoch, "vitals"}` of known
    signals with arrays of one length of finite numbers or null, read at a fraction of `parse_item`'s cost: the
    values of every item are checked and converted at once. None when any item is otherwise: `_items` then reads
    the message item by item and names each problem (the chunks are the same either way: tested)."""
    signals = tuple(spec.signals)
    known, max_s = set(signals), params.max_message_s
    flat: list[Any] = []
    heads = []
    for item in items:
        if type(item) is not dict or item.keys() != _USUAL_KEYS:
            return None
        bed, start, vitals = item["bed"], item["start"], item["vitals"]
        if type(bed) is not str or BED_ID.fullmatch(bed) is None or type(vitals) is not dict or not vitals:
            return None
        if type(start) is float and math.isfinite(start):
            start = round(start)
        elif type(start) is not int:
            return None
        if not FIRST_SECOND <= start <= LAST_SECOND:
            return None
        if not vitals.keys() <= known:
            return None
        first = next(iter(vitals.values()))
        m = len(first) if type(first) is list else 0
        if not 1 <= m <= max_s:
            return None
        for v in vitals.values():
            if type(v) is not list or len(v) != m:
                return None
            flat += v
        heads.append((bed, start, tuple(vitals), m))
    if not set(map(type, flat)) <= _NUMBER_TYPES:
        return None
    try:
        every = np.array(flat, dtype=np.float64)  # null -> NaN
    except OverflowError:
        return None
    finite = np.isfinite(every)
    if len(every) - np.count_nonzero(finite) != flat.count(None) or (np.abs(every[finite]) >= 1e300).any():
        return None  # a NaN or infinity sent as a number, or a number beyond what a float holds
    chunks, at = [], 0
    for k, (bed, start, keys, m) in enumerate(heads):
        block = every[at:at + len(keys) * m].reshape(len(keys), m)
        at += block.size
        if keys == signals:
            values = block
        else:
            values = np.full((len(signals), m), np.nan)
            values[[signals.index(s) for s in keys]] = block
        chunks.append(Chunk(bed, start, values, k))
    return chunks
