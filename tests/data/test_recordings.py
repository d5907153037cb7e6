"""Local recordings (CSV and Parquet, one file per case) as a data source: the formats a monitor export comes in,
the real IntelliVue fixtures exported to CSV, and every kind of bad file, which is skipped with a message naming
file, row and column while the others are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from biostream.core.config import load_yaml, merge_profile
from biostream.core.params import load_params, validate
from biostream.data.dataset import read_dataset
from biostream.sources.recordings import RecordingError, RecordingsParams, ingest_recordings, read_recording
from biostream.sources.vitaldb import read_vital
from pipelines import ingest_recordings as stage
from tests.conftest import FIXTURES, ROOT


def params(tmp_path: Path, **over) -> RecordingsParams:
    raw = merge_profile(load_yaml(ROOT / "params.yaml"), {"ingest_recordings": {"folder": str(tmp_path), **over}})
    return validate(raw).ingest_recordings


def test_csv_with_iso_times_device_tracks_and_canonical_names(tmp_path, configs):
    (tmp_path / "a.csv").write_text(
        "time,hr,Solar8000/NIBP_MBP,spo2,ward\n"
        "2026-11-21T10:15:00Z,72,81,98,A\n"
        "2026-11-21T10:15:01Z,73,,--,A\n"
        "2026-11-21T10:15:01.600Z,74,,97,A\n"  # the same second again: the last row wins
        "2026-11-21T10:15:04Z,75,79,97,A\n")  # two seconds without a row: missing
    raw, ignored = read_recording(tmp_path / "a.csv", configs.signals, params(tmp_path))
    assert ignored == ["ward"]
    assert len(raw) == 5 and raw["hr"].tolist()[:2] == [72, 74] and raw["hr"].iloc[4] == 75
    assert np.isnan(raw["hr"].to_numpy()[2:4]).all()
    assert raw["spo2"].iloc[1] == 97  # the second's last row, not its "--"
    assert raw["Solar8000/NIBP_MBP"].iloc[0] == 81 and np.isnan(raw["Solar8000/NIBP_MBP"].iloc[1])
    (tmp_path / "d.csv").write_text("time,spo2\n0,--\n1,97\n")
    raw, _ = read_recording(tmp_path / "d.csv", configs.signals, params(tmp_path))
    assert np.isnan(raw["spo2"].iloc[0]) and raw["spo2"].iloc[1] == 97


def test_rows_without_a_time_column_are_seconds_and_parquet_with_seconds(tmp_path, configs):
    pd.DataFrame({"hr": [70.0, 71.0, np.nan], "map": [80, 81, 82]}).to_csv(tmp_path / "b.csv", index=False)
    raw, _ = read_recording(tmp_path / "b.csv", configs.signals, params(tmp_path))
    assert len(raw) == 3 and raw["map"].tolist() == [80, 81, 82] and np.isnan(raw["hr"].iloc[2])
    pd.DataFrame({"time_s": [100.0, 101.0, 103.0], "hr": [60.0, 61.0, 63.0]}).to_parquet(tmp_path / "c.parquet")
    raw, _ = read_recording(tmp_path / "c.parquet", configs.signals, params(tmp_path))
    assert len(raw) == 4 and raw["hr"].tolist()[:2] == [60, 61] and raw["hr"].iloc[3] == 63


@pytest.mark.parametrize(("content", "message"), [
    ("time,hr\n2026-11-21T10:15:00Z,72\n2026-11-21T10:15:01Z,seventy\n",
     r"row 3, column 'hr': 'seventy' is not a number"),
    ("time,hr\n2026-11-21T10:15:00Z,72\nyesterday,73\n", r"row 3, column 'time': 'yesterday' is not a time"),
    ("time,lactate,ward\n0,1.2,A\n", "no column names a signal; name them by the signal"),
    ("time,hr\n", "no rows"),
    ("time_s,hr\n0,70\n1000000,71\n", r"spans 277\.8 h, more than ingest_recordings.max_hours"),
])
def test_a_bad_file_is_named_with_row_column_and_fix(tmp_path, configs, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(RecordingError, match=message) as info:
        read_recording(tmp_path / "bad.csv", configs.signals, params(tmp_path))
    assert str(tmp_path / "bad.csv") in str(info.value)


def test_a_file_that_is_not_what_it_says(tmp_path, configs):
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RecordingError, match="cannot be read as PARQUET"):
        read_recording(tmp_path / "x.parquet", configs.signals, params(tmp_path))
    (tmp_path / "y.csv").write_text("time,hr\n0,70\n")
    with pytest.raises(RecordingError, match="no column 'clock' .ingest_recordings.time_column.; columns: time, hr"):
        read_recording(tmp_path / "y.csv", configs.signals, params(tmp_path, time_column="clock"))


def test_bad_files_are_skipped_and_reported_the_others_kept(tmp_path, configs):
    pd.DataFrame({"hr": np.full(120, 80.0)}).to_csv(tmp_path / "good.csv", index=False)
    (tmp_path / "bad.csv").write_text("hr\n80\nabc\n")
    (tmp_path / "notes.txt").write_text("not a recording")
    result = ingest_recordings(params(tmp_path), configs.signals)
    assert [c.patient_id for c in result.cases] == ["rec-good"]
    assert [f["case"] for f in result.failures] == ["bad.csv"] and "row 3, column 'hr'" in result.failures[0]["error"]
    empty = ingest_recordings(params(tmp_path / "none"), configs.signals)
    assert not empty.cases and "does not exist" in empty.notes[0]


def test_real_intellivue_recordings_exported_to_csv_read_as_the_vital_files(tmp_path, configs):
    """The IntelliVue fixtures, read from their .vital files and from CSV exports of the same tracks (with a time
    column), give the same per-second values."""
    tracks = configs.signals.all_tracks()
    checked = 0
    for path in sorted((FIXTURES / "vital").glob("*.vital")):
        vital = read_vital(path, tracks, 1)
        if vital.empty:
            continue
        export = vital.copy()
        export.insert(0, "time", pd.date_range("2026-11-21T10:00:00Z", periods=len(vital), freq="s").strftime(
            "%Y-%m-%dT%H:%M:%SZ"))
        export.to_csv(tmp_path / f"{path.stem}.csv", index=False)
        raw, ignored = read_recording(tmp_path / f"{path.stem}.csv", configs.signals, params(tmp_path))
        assert not ignored
        pd.testing.assert_frame_equal(raw[vital.columns].reset_index(drop=True), vital.reset_index(drop=True),
                                      check_dtype=False)
        checked += 1
    assert checked >= 2


def test_the_stage_writes_a_labelled_dataset_and_its_manifest(tmp_path, configs):
    folder = tmp_path / "recordings"
    folder.mkdir()
    n = 900
    m = np.r_[np.full(300, 80.0), np.full(200, 58.0), np.full(400, 80.0)]  # a 200-s hypotension
    pd.DataFrame({"time_s": np.arange(n), "hr": 70.0, "map": m, "spo2": 98.0}).to_csv(folder / "case-1.csv",
                                                                                         index=False)
    (folder / "case-2.csv").write_text("hr\nnot-a-number\n")
    raw = merge_profile(load_yaml(ROOT / "params.yaml"), {"ingest_recordings": {"folder": str(folder)}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    code = stage.main(["--params", str(tmp_path / "params.yaml"), "--signals", str(ROOT / "configs/signals.yaml"),
                       "--alarms", str(ROOT / "configs/alarms.yaml"), "--out", str(tmp_path / "out"),
                       "--metrics", str(tmp_path / "m.json")])
    assert code == 0
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["cases"] == 1 and manifest["failed_cases"] == 1 and manifest["status"] == "ok"
    ds = read_dataset(tmp_path / "out")
    assert ds.patients[["patient_id", "source", "bp_mode"]].values.tolist() == [["rec-case-1", "recordings",
                                                                                   "arterial"]]
    assert ds.events[["start_s", "end_s", "kind", "event_class"]].values.tolist() == [
        [300, 500, "hypotension", "physiological"]]
    # an empty folder: an empty dataset, or an error when data is required
    empty = merge_profile(raw, {"ingest_recordings": {"folder": str(tmp_path / "nothing"), "require_data": True}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(empty))
    assert stage.main(["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "out2"),
                       "--metrics", str(tmp_path / "m2.json"), "--signals", str(ROOT / "configs/signals.yaml"),
                       "--alarms", str(ROOT / "configs/alarms.yaml")]) == 2
    assert not (tmp_path / "out2").exists()


def test_the_real_reference_recordings_read_as_their_readme_describes(configs, tmp_path):
    """data/external/real (the `ingest_real` stage): BIDMC's 1-Hz numerics (`Time [s]`, ` HR`, ` RESP`, ` SpO2`) and
    MIMIC's minute rows (`HR[bpm]`, `ABPMean[mmHg]`, ..., 0 = missing), each minute row held until the next, mapped
    onto the signals, with a labelled dataset and its attribution beside the files."""
    real = ROOT / "data/external/real"
    readme = (real / "README.md").read_text()
    for credit in ("Pimentel", "ODC-By", "Johnson A.", "MIT licence"):
        assert credit in readme, credit
    p = load_params(ROOT / "params.yaml").ingest_real
    result = ingest_recordings(p, configs.signals, source="real")
    assert not result.failures and len(result.cases) == 29
    assert {c.patient_id for c in result.cases} >= {"real-bidmc_01_Numerics", "real-mimic3_p000020_numerics_1perMin"}
    assert all(cols == ["PULSE"] for name, cols in result.ignored_columns.items() if name.startswith("bidmc"))
    bidmc = next(c.raw for c in result.cases if c.patient_id == "real-bidmc_01_Numerics")
    assert list(bidmc.columns) == ["hr", "RESP", "spo2"] and len(bidmc) == 481
    assert bidmc.loc[0].tolist() == [94.0, 25.0, 97.0]
    minutes = next(c.raw for c in result.cases if c.patient_id == "real-mimic3_p000020_numerics_1perMin")
    source = pd.read_csv(real / "mimic3_p000020_numerics_1perMin.csv")
    assert len(minutes) == int(source["time_s"].max()) + 1
    for col, name in (("hr", "HR[bpm]"), ("ABPMean", "ABPMean[mmHg]")):
        np.testing.assert_allclose(minutes[col].to_numpy()[[0, 30, 59, 60]],
                                   source[name].to_numpy()[[0, 0, 0, 1]].astype(np.float32))
    # the stage: minute rows held, zeros missing, the arterial line seen
    out = tmp_path / "real"
    assert stage.main(["--dataset", "real", "--out", str(out), "--metrics", str(tmp_path / "real.json")]) == 0
    ds = read_dataset(out)
    p20 = ds.vitals[ds.vitals["patient_id"] == "real-mimic3_p000020_numerics_1perMin"]
    zero_hr = source.loc[source["HR[bpm]"] == 0, "time_s"].to_numpy()
    if len(zero_hr):
        assert np.isnan(p20.set_index("time_s").loc[zero_hr[0] + 30, "hr"])
    patients = ds.patients.set_index("patient_id")
    assert patients.loc["real-mimic3_p000020_numerics_1perMin", "bp_mode"] == "arterial"
    assert patients.loc["real-bidmc_01_Numerics", "bp_mode"] == "none"
    manifest = json.loads((tmp_path / "real.json").read_text())
    assert manifest["dataset"] == "real" and manifest["cases"] == 29 and manifest["events"] > 0
