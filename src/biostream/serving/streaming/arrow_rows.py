"""`POST /ingest` as an Arrow IPC stream (`parse_arrow`): one row per bed and second, sized from its metadata before
anything is decompressed, then read into the same chunks and problems as a JSON message."""

from __future__ import annotations

from typing import Any

import numpy as np

from biostream.serving.spec import ServingSpec
from biostream.serving.streaming.answers import MAX_PROBLEMS, Chunk, Problem, Problems
from biostream.serving.streaming.messages import (
    BED_FORM,
    FIRST_SECOND,
    LAST_SECOND,
    MessageError,
    check_ranges,
    echoed,
    is_bed,
    too_many,
)
from biostream.serving.streaming.params import StreamParams


def parse_arrow(body: bytes, spec: ServingSpec, params: StreamParams) -> tuple[list[Chunk], Problems]:
    """`application/vnd.apache.arrow.stream`: one row per bed and second, columns `bed` (string), `time` (timestamp,
    no zone = UTC, or seconds since the epoch) and one floating-point column per signal sent (null or NaN where
    missing). Rows of one bed at consecutive seconds form one item. Its rows and decoded size are read from its
    metadata first: a stream of more rows than `max_message_bed_s`, or that decompresses to more than such rows
    take, is refused (413) before anything is decompressed."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from biostream.serving.ipc import ipc_size

    try:
        size = ipc_size(body)
    except ValueError as error:
        raise MessageError(f"{error}; send one row per bed and second with columns bed, time and one per signal "
                           f"(pyarrow.ipc.new_stream)") from None
    if size.rows > params.max_message_bed_s:
        raise too_many(size.rows, params)
    most = max_decoded_bytes(params.max_message_bed_s, len(spec.signals))
    if size.decoded_bytes > most:
        raise MessageError(f"the Arrow stream decodes to {size.decoded_bytes} bytes; {size.rows} rows of bed, time "
                           f"and {len(spec.signals)} signals take at most {most} (a bed id is at most 128 characters)"
                           f": send fewer rows or columns", 413)
    try:
        table = pa.ipc.open_stream(body).read_all()
        table.validate(full=True)  # offsets within bounds: a crafted stream must not read past its buffers
    except (pa.ArrowException, OSError) as error:
        raise MessageError(f"the body is not an Arrow IPC stream ({error}); send one row per bed and second with "
                           f"columns bed, time and one per signal") from None
    names = table.column_names
    missing = [c for c in ("bed", "time") if c not in names]
    unknown = sorted(set(names) - {"bed", "time", *spec.signals})
    if missing or unknown or len(set(names)) != len(names):
        raise MessageError(f"Arrow columns {[n[:40] for n in names[:20]]}: need bed, time and signals among "
                           f"{', '.join(spec.signals)}" + (f"; missing {missing}" if missing else "")
                           + (f"; unknown {[u[:40] for u in unknown[:5]]}" if unknown else ""))
    bed_col = table.column("bed")
    if not (pa.types.is_string(bed_col.type) or pa.types.is_large_string(bed_col.type)
            or (pa.types.is_dictionary(bed_col.type) and pa.types.is_string(bed_col.type.value_type))):
        raise MessageError(f"Arrow column bed is {bed_col.type}; send the bed ids as strings")
    beds = bed_col.to_pylist()
    distinct = len(set(beds))
    if distinct > params.max_message_beds:
        raise MessageError(f"{distinct} beds in one message; at most {params.max_message_beds} "
                           f"(stream.max_message_beds): split it", 413)
    time_col = table.column("time")
    if not (pa.types.is_timestamp(time_col.type) or pa.types.is_floating(time_col.type)
            or pa.types.is_integer(time_col.type)):
        raise MessageError(f"Arrow column time is {time_col.type}; send a timestamp (no zone = UTC) or seconds since "
                           f"the epoch (float64 or int64)")
    if pa.types.is_timestamp(time_col.type):
        secs = pc.cast(time_col, pa.timestamp("ms", tz="UTC"), safe=False).cast(pa.int64()).to_numpy(
            zero_copy_only=False) / 1e3
    else:
        secs = time_col.to_numpy(zero_copy_only=False).astype(np.float64)
    values = np.full((len(spec.signals), table.num_rows), np.nan)
    problems = Problems()
    for i, s in enumerate(spec.signals):
        if s in names:
            col = table.column(s)
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise MessageError(f"Arrow column {s} is {col.type}; send float32 or float64 values (null or NaN "
                                   f"where missing)")
            values[i] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    n = table.num_rows
    del table
    bad_bed = ~np.fromiter(map(is_bed, beds), dtype=bool, count=n)
    with np.errstate(invalid="ignore"):
        bad_time = ~(np.isfinite(secs) & (secs >= FIRST_SECOND) & (secs <= LAST_SECOND))
    infinite = np.isinf(values).any(axis=0)
    bad_rows = np.nonzero(bad_bed | bad_time | infinite)[0]
    for r in bad_rows[:MAX_PROBLEMS].tolist():
        problems.append(_row_problem(r, beds[r], bool(bad_bed[r]), bool(bad_time[r])))
    if len(bad_rows) > MAX_PROBLEMS:  # the rest counted; each readable bed among them is refused all the same
        rest = bad_rows[MAX_PROBLEMS:]
        problems.total += len(rest)
        for r in rest[~bad_bed[rest]].tolist():
            if beds[r] not in problems.refused_beds:
                problems.refused_beds[beds[r]] = _row_problem(r, beds[r], False, bool(bad_time[r])).error
    good = np.nonzero(~(bad_bed | bad_time | infinite))[0]
    chunks: list[Chunk] = []
    if good.size:
        # a bed's rows at consecutive seconds form one chunk, whatever their order in the message
        names, code = np.unique(np.array([beds[r] for r in good], dtype=object), return_inverse=True)
        t = np.round(secs[good]).astype(np.int64)
        order = np.lexsort((good, t, code))
        code, t, rows = code[order], t[order], good[order]
        cut = np.ones(len(rows), dtype=bool)
        cut[1:] = (code[1:] != code[:-1]) | (t[1:] != t[:-1] + 1)
        starts = np.nonzero(cut)[0]
        for a, b in zip(starts, [*starts[1:], len(rows)], strict=True):
            chunks.append(Chunk(str(names[code[a]]), int(t[a]), values[:, rows[a:b]], int(rows[a])))
        chunks.sort(key=lambda c: c.index)  # the message's order
    check_ranges(chunks, spec, problems)
    return chunks, problems


def max_decoded_bytes(bed_s: int, signals: int) -> int:
    """The most bytes an Arrow message's buffers may decode to (and its body's limit): its rows at most (`bed_s`:
    `stream.max_message_bed_s`), each a bed id of at most 128 characters (with its offset and validity), a time and
    `signals` signals as float64 (with validity)."""
    return int(bed_s) * ((128 + 4 + 1) + 9 + 9 * signals) + (1 << 20)


def _row_problem(r: int, bed: Any, bad_bed: bool, bad_time: bool) -> Problem:
    if bad_bed or bad_time:
        field = "bed" if bad_bed else "time"
        return Problem(r, None if bad_bed else bed, field,
                       echoed(bed)[:40] if bad_bed and isinstance(bed, str) else None,
                       BED_FORM if bad_bed else "a time from 1970 to 9999",
                       f"row {r}: {field} is missing or not usable" + (f": a bed id is {BED_FORM}" if bad_bed else ""),
                       "nothing of this row", refused=not bad_bed)
    return Problem(r, bed, "values", "Infinity", "finite numbers", f"row {r} (bed {bed!r}): an infinite value; send "
                   f"NaN or null for a missing one", "nothing of this row", refused=True)
