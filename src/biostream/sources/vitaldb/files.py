"""Reading and writing `.vital` files (Vital Recorder's format, read with the `vitaldb` package)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from biostream.core.io import atomic_path


class VitalFileError(RuntimeError):
    """A .vital file cannot be read: truncated, corrupt, or not a .vital file."""


def check_vital_file(path: Path) -> None:
    """Raise VitalFileError unless `path` is a complete gzip stream that starts like a .vital file.

    `vitaldb.VitalFile` reads a truncated file without complaint (it stops at the end of the data and
    returns what it got), so completeness is checked here first.
    """
    try:
        with gzip.open(path, "rb") as fh:
            if fh.read(4) != b"VITA":
                raise VitalFileError(
                    f"{path}: not a .vital file (no VITA signature); export it again with Vital Recorder"
                )
            while fh.read(1 << 20):
                pass
    except VitalFileError:
        raise
    except (EOFError, OSError, zlib.error) as exc:
        raise VitalFileError(
            f"{path}: truncated or corrupt .vital file ({exc}); the case is skipped - "
            "download or export it again"
        ) from exc


def read_vital(path: Path, tracks: Sequence[str], interval_s: int) -> pd.DataFrame:
    """The requested numeric tracks of a .vital file on a regular grid (columns: track names present)."""
    import vitaldb  # imported here: a large module, needed only by ingestion

    check_vital_file(path)
    try:
        vf = vitaldb.VitalFile(str(path), list(tracks))
    except Exception as exc:  # the parser raises assorted errors on malformed content
        raise VitalFileError(f"{path}: cannot parse .vital file ({type(exc).__name__}: {exc})") from exc
    present = [t for t in tracks if t in vf.trks and vf.trks[t].type == 2]
    if vf.dtend <= vf.dtstart:
        return pd.DataFrame({t: pd.Series(dtype=np.float32) for t in present})
    raw = vf.to_pandas(present, interval_s) if present else pd.DataFrame()
    return raw.astype(np.float32)


def write_vital_file(
    recording: pd.DataFrame, path: Path, track_of: Mapping[str, str], start_epoch_s: float, interval_s: int = 1
) -> None:
    """Write canonical signals as a .vital file with `vitaldb` (one numeric track per signal, named by
    `track_of`, e.g. {"hr": "Solar8000/HR"}); missing values are left out, as a monitor records them.
    Useful to look at synthetic patients in Vital Recorder and to test the loader on a round trip."""
    import vitaldb

    vf = vitaldb.VitalFile()
    n = len(recording)
    times = start_epoch_s + np.arange(n) * interval_s
    for signal, track in track_of.items():
        values = recording[signal].to_numpy(dtype=np.float64)
        ok = ~np.isnan(values)
        recs = [{"dt": float(t), "val": float(v)} for t, v in zip(times[ok], values[ok], strict=True)]
        vf.add_track(track, recs, srate=0)
    vf.dtstart = float(start_epoch_s)
    vf.dtend = float(start_epoch_s + n * interval_s)
    with atomic_path(path) as tmp:
        vf.to_vital(str(tmp))
