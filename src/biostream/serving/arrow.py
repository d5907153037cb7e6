"""Batches of windows as Apache Arrow IPC streams: the binary body `POST /predict` also accepts.

A gateway that scores many beds sends a batch as one Arrow record batch (`Content-Type:
application/vnd.apache.arrow.stream`) instead of JSON: the service reads its float32 values without parsing a
number (docs/benchmarks.md). `windows_from_arrow` reads and checks a body (the columns and checks are in its
docstring and docs/serving.md); the answer is the JSON of `POST /predict`. `windows_to_arrow` writes such a body
(clients, tests, the benchmark).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from biostream.serving.checks import too_much_missing
from biostream.serving.spec import ServingSpec

ARROW_STREAM = "application/vnd.apache.arrow.stream"
META = ("patient_id", "time")


class ArrowWindow(NamedTuple):
    """One window of an Arrow batch, validated: what `biostream.serving.Scorer.predict` reads of a window."""

    patient_id: str
    time: datetime
    array: np.ndarray  # (S, window_s) float32, NaN = missing; padded before a recording's first second


def windows_to_arrow(patient_ids: Sequence[str], times: Sequence[datetime | float],
                     vitals: Mapping[str, np.ndarray | Sequence[np.ndarray]], compression: str | None = None) -> bytes:
    """An Arrow IPC stream of windows: `vitals` maps a signal to its values (NaN = missing), an (n, T) array
    (every window T seconds) or one array per window (windows of different lengths; each window's signals
    the same length). `compression`: None, "lz4" or "zstd" (Arrow's IPC buffer compression, which readers
    undo by themselves: vital signs shrink ~4x with lz4)."""
    if times and isinstance(times[0], datetime):
        time_col = pa.array(times, type=pa.timestamp("ms", tz="UTC"))
    else:
        time_col = pa.array(np.asarray(times, dtype=np.float64))
    cols = {"patient_id": pa.array(list(patient_ids), type=pa.string()), "time": time_col}
    for s, v in vitals.items():
        if isinstance(v, np.ndarray) and v.ndim == 2:
            v = np.ascontiguousarray(v, dtype=np.float32)
            cols[s] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])
        else:
            rows = [np.asarray(r, dtype=np.float32) for r in v]
            offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
            cols[s] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.concatenate(rows) if rows else
                                                                           np.empty(0, np.float32)))
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def largest_body(spec: ServingSpec) -> int:
    """Bytes of the largest batch a client may send: `max_batch_windows` windows of `max_window_s` float64
    values per signal, and room for ids, times, validity bitmaps and offsets (larger bodies: 413)."""
    return spec.max_batch_windows * len(spec.signals) * spec.max_window_s * 8 + (4 << 20)


def _read(body: bytes) -> pa.Table:
    if not body:
        raise ValueError(f"empty body: send the windows as an Arrow IPC stream ({ARROW_STREAM}) or as JSON")
    try:
        table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        table.validate(full=True)  # offsets within bounds: a crafted stream must not read past its buffers
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"the body is not a valid Arrow IPC stream ({error}); write it with an Arrow library's IPC "
                         f"stream writer (pyarrow.ipc.new_stream), Content-Type {ARROW_STREAM}") from None
    return table


def _where(row: int, pids: Sequence[str]) -> str:
    return f"row {row} (patient_id {pids[row]!r})"


def _meta(table: pa.Table, spec: ServingSpec) -> tuple[list[str], list[datetime]]:
    unknown = [c for c in table.column_names if c not in META and c not in spec.signals]
    if unknown:
        raise ValueError(f"unknown column(s) {', '.join(map(repr, unknown))}: columns are patient_id, time and "
                         f"signals among {', '.join(spec.signals)}")
    if len(set(table.column_names)) != len(table.column_names):
        raise ValueError("a column name appears twice; send each of patient_id, time and the signals once")
    for c in META:
        if c not in table.column_names:
            raise ValueError(f"no `{c}` column: every window needs a patient_id (string) and a time (timestamp or "
                             f"seconds since the epoch, of its last sample)")
        if table[c].null_count:
            raise ValueError(f"`{c}` is null in {table[c].null_count} row(s); every window needs one")
    if not (pa.types.is_string(table["patient_id"].type) or pa.types.is_large_string(table["patient_id"].type)):
        raise ValueError(f"`patient_id` is {table['patient_id'].type}; send it as a string column")
    pids = table["patient_id"].to_pylist()
    for i, p in enumerate(pids):
        if not 1 <= len(p) <= 128:
            raise ValueError(f"row {i}: patient_id has {len(p)} characters; send 1 to 128")
    t = table["time"]
    if pa.types.is_timestamp(t.type):
        times = t.cast(pa.timestamp("us", tz=t.type.tz or "UTC")).to_pylist()
    elif pa.types.is_integer(t.type) or pa.types.is_floating(t.type):
        secs = t.to_numpy()
        bad = ~np.isfinite(secs.astype(np.float64)) | (np.abs(secs) > 2e10)  # (JSON reads larger numbers as ms)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{_where(i, pids)}: time = {secs[i]} is not a time; send seconds since the epoch")
        times = [datetime.fromtimestamp(float(v), tz=UTC) for v in secs]
    else:
        raise ValueError(f"`time` is {t.type}; send a timestamp column or seconds since the epoch (a number)")
    return pids, times


def _signal(table: pa.Table, name: str, spec: ServingSpec, pids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One signal column -> (its values, float32, NaN = missing; per-row lengths, -1 where not sent)."""
    col = table[name].combine_chunks()
    t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) or not (
            pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise ValueError(f"`{name}` is {t}; send each signal as a list of numbers per window (e.g. "
                         f"fixed_size_list<float32>), null or NaN where missing")
    if pa.types.is_fixed_size_list(t) and not col.null_count:
        lengths = np.full(len(col), t.list_size, dtype=np.int64)
    else:
        lengths = pc.list_value_length(col).fill_null(-1).to_numpy().astype(np.int64)
    flat = col.flatten()
    # float32, as the model reads them (null -> NaN; read-only); a number beyond float32 becomes infinite
    values = (flat if flat.type == pa.float32() else flat.cast(pa.float32(), safe=False)).to_numpy(
        zero_copy_only=False)
    lo, hi = spec.valid[name]
    bad = (values < lo) | (values > hi)  # NaN compares False: a missing value is fine; infinities are out
    if bad.any():
        k = int(np.argmax(bad))
        ends = np.cumsum(np.maximum(lengths, 0))
        row = int(np.searchsorted(ends, k, side="right"))
        j = k - int(ends[row] - max(lengths[row], 0))
        v = flat[k].as_py()  # as sent
        what = ("not a finite number; send null or NaN for a missing value" if not np.isfinite(v) else
                f"outside the physiological range [{lo:g}, {hi:g}] {spec.units[name]} (configs/signals.yaml); send "
                f"null or NaN for a missing or implausible value")
        raise ValueError(f"{_where(row, pids)}: {name}[{j}] = {v:g} is {what}"
                         + (f" ({int(bad.sum())} values in `{name}` are)" if bad.sum() > 1 else ""))
    return values, lengths


def windows_from_arrow(body: bytes, spec: ServingSpec) -> list[ArrowWindow]:
    """The validated windows of an Arrow IPC stream, one row per window:

    * `patient_id`: string;
    * `time`: the time of the window's last sample, a timestamp (no zone = UTC) or seconds since the epoch;
    * one column per signal sent, named as in `POST /metadata` (`hr`, `spo2`, ...): a list (or large or fixed-size
      list) of floating-point or integer values at 1 Hz, oldest first, null or NaN where missing; a null list, or
      a signal left out of the batch, is a signal not monitored for that window.

    Every window passes the checks of a JSON window (equal lengths, 1..`max_window_s` values, finite, physiological
    range, missing fraction; batch size). Raises ValueError naming the row, the patient, the column, the value and
    the limit (a 400)."""
    from biostream.serving.ipc import ipc_size

    try:
        size = ipc_size(body)
    except ValueError as error:
        raise ValueError(f"{error}; write it with an Arrow library's IPC stream writer (pyarrow.ipc.new_stream), "
                         f"Content-Type {ARROW_STREAM}") from None
    if size.rows > spec.max_batch_windows or size.decoded_bytes > largest_body(spec):
        raise ValueError(f"{size.rows} windows, {size.decoded_bytes} bytes decoded; send 1 to "
                         f"{spec.max_batch_windows} per request (serve.max_batch_windows), each of at most "
                         f"{spec.max_window_s} s (serve.max_window_s): at most {largest_body(spec)} bytes decoded")
    table = _read(body)
    n = table.num_rows
    if not 1 <= n <= spec.max_batch_windows:
        raise ValueError(f"{n} windows; send 1 to {spec.max_batch_windows} per request (serve.max_batch_windows)")
    pids, times = _meta(table, spec)
    s_count, w = len(spec.signals), spec.window_s
    sent = [s for s in spec.signals if s in table.column_names]
    columns = {s: _signal(table, s, spec, pids) for s in sent}
    lengths = np.full((s_count, n), -1, dtype=np.int64)
    for j, s in enumerate(spec.signals):
        if s in columns:
            lengths[j] = columns[s][1]
    row_len = lengths.max(axis=0)
    if (row_len < 0).any():
        i = int(np.argmax(row_len < 0))
        raise ValueError(f"{_where(i, pids)}: no signal sent; send lists for some of {', '.join(spec.signals)}")
    uneven = ((lengths >= 0) & (lengths != row_len)).any(axis=0)
    if uneven.any():
        i = int(np.argmax(uneven))
        given = ", ".join(f"{s} has {lengths[j, i]} values" for j, s in enumerate(spec.signals)
                          if 0 <= lengths[j, i] != row_len[i])
        longest = spec.signals[int(np.argmax(lengths[:, i]))]
        raise ValueError(f"{_where(i, pids)}: {given} but {longest} has {row_len[i]}: every signal of a window "
                         f"covers the same seconds (1 Hz, oldest first; null or NaN where missing)")
    if (row_len < 1).any() or (row_len > spec.max_window_s).any():
        i = int(np.argmax((row_len < 1) | (row_len > spec.max_window_s)))
        raise ValueError(f"{_where(i, pids)}: {row_len[i]} values per signal; send 1 to {spec.max_window_s} "
                         f"(serve.max_window_s; the model reads the last {w})")
    x = np.empty((n, s_count, w), dtype=np.float32)
    uniform = (row_len == row_len[0]).all()
    for j, s in enumerate(spec.signals):
        if s not in columns:
            x[:, j] = np.nan
            continue
        values, lens = columns[s]
        if uniform and (lens >= 0).all():
            k = min(int(row_len[0]), w)
            x[:, j, : w - k] = np.nan  # before the recording
            x[:, j, w - k:] = values.reshape(n, -1)[:, -k:]
            continue
        x[:, j] = np.nan
        start = 0
        for i in range(n):
            if lens[i] > 0:
                k = min(int(lens[i]), w)
                x[i, j, w - k:] = values[start + lens[i] - k : start + lens[i]]
                start += int(lens[i])
    read = np.minimum(row_len, w)  # the seconds the model reads of each window (the rest is before the recording)
    nan = np.isnan(x).reshape(n, -1)
    padded = (w - read) * s_count  # all missing
    missing = (np.array([np.count_nonzero(m) for m in nan]) - padded) / (read * s_count)
    over = missing > spec.max_missing_fraction
    if over.any():
        i = int(np.argmax(over))
        raise ValueError(f"{_where(i, pids)}: {too_much_missing(spec, missing[i], int(read[i]))}")
    return [ArrowWindow(p, t, x[i]) for i, (p, t) in enumerate(zip(pids, times, strict=True))]
