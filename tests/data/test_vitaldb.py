"""VitalDB ingestion on real .vital files, on .vital files written here with `vitaldb`, and through the
online path against a local HTTP server that plays VitalDB's API (its /cases and /trks tables and
/<version>/<caseid>.vital files), including failures: 503s, cut-off bodies, 404s, an unreachable host."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from biostream.core.config import load_yaml, merge_profile
from biostream.core.params import load_params
from biostream.data.dataset import read_dataset
from biostream.sources.vitaldb import (
    VitalFileError,
    read_vital,
    select_cases,
    to_canonical,
    write_vital_file,
)
from pipelines import ingest_vitaldb
from tests.conftest import FIXTURES, ROOT

SOLAR = {
    "hr": "Solar8000/HR",
    "spo2": "Solar8000/PLETH_SPO2",
    "sbp": "Solar8000/ART_SBP",
    "dbp": "Solar8000/ART_DBP",
    "map": "Solar8000/ART_MBP",
    "rr": "Solar8000/RR_CO2",
    "temp": "Solar8000/BT",
    "etco2": "Solar8000/ETCO2",
}
VITAL_FIXTURES = sorted((FIXTURES / "vital").glob("*.vital"))


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def run_stage(tmp_path: Path, overrides: dict) -> tuple[int, dict]:
    """Run the real stage CLI with params.yaml + overrides; return (exit code, manifest or {})."""
    params = merge_profile(load_yaml(ROOT / "params.yaml"), {"ingest_vitaldb": overrides})
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    metrics = tmp_path / "metrics.json"
    code = ingest_vitaldb.main([
        "--params", str(params_path),
        "--signals", str(ROOT / "configs/signals.yaml"),
        "--alarms", str(ROOT / "configs/alarms.yaml"),
        "--out", str(tmp_path / "out"),
        "--metrics", str(metrics),
    ])
    return code, (json.loads(metrics.read_text()) if metrics.exists() else {})


def synthetic_case(small_dataset, patient: str) -> pd.DataFrame:
    v = small_dataset.vitals
    return v[v["patient_id"] == patient].reset_index(drop=True)


class FakeVitalDB:
    """A local HTTP server serving VitalDB's API paths, with failure injection per path."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: Counter[str] = Counter()
        self.fail_first: dict[str, int] = {}  # path -> number of 503 answers before success
        self.cut_off: set[str] = set()  # paths whose body is cut off mid-way
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                outer.requests[self.path] += 1
                if outer.fail_first.get(self.path, 0) >= outer.requests[self.path]:
                    self.send_error(503, "busy")
                    return
                file = outer.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404, "no such case")
                    return
                body = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in outer.cut_off else body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path, small_dataset):
    """VitalDB's API on loopback: case 1 qualifies; 2 is spinal; 3 has no pressure track; 4 is short;
    5 qualifies too."""
    root = tmp_path / "api"
    (root / "1.0.1").mkdir(parents=True)
    cases = pd.DataFrame({
        "caseid": [1, 2, 3, 4, 5],
        "casestart": 0,
        "caseend": [7200, 7200, 7200, 1800, 9000],
        "ane_type": ["General", "Spinal", "General", "General", "General"],
    })
    cases.to_csv(root / "cases", index=False)
    rows = []
    patients = sorted(small_dataset.vitals["patient_id"].unique())
    for caseid, patient in zip([1, 2, 3, 4, 5], patients, strict=False):
        tracks = dict(SOLAR)
        if caseid == 3:
            for s in ("sbp", "dbp", "map"):
                tracks.pop(s)
        write_vital_file(synthetic_case(small_dataset, patient)[list(tracks)], root / f"1.0.1/{caseid}.vital",
                         tracks, start_epoch_s=1.7e9)
        rows += [{"caseid": caseid, "tname": t, "tid": f"t{caseid}-{i}"} for i, t in enumerate(tracks.values())]
    pd.DataFrame(rows).to_csv(root / "trks", index=False)
    server = FakeVitalDB(root)
    yield server
    server.close()


def api_params(api, tmp_path, **extra):
    return {
        "sources": ["api"],
        "api_url": api.url,
        "cache_dir": str(tmp_path / "cache"),
        "retries": 2,
        "backoff_s": 0.01,
        "timeout_s": 5,
        "workers": 2,
        **extra,
    }


# --------------------------------------------------------------------------------------------------
# mapping and cleaning
# --------------------------------------------------------------------------------------------------


def test_to_canonical_priority_hold_and_cleaning(configs):
    n = 12
    raw = pd.DataFrame({
        "Solar8000/ART_MBP": [80, 81, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 400, 85, 86, 87],
        "Solar8000/NIBP_MBP": [np.nan, np.nan, np.nan, 70, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, 90],
        "Solar8000/HR": [60, np.nan, 62, 10, 64, 65, 66, 67, 68, 69, 70, 71],
        "Intellivue/HR": [99] * n,
        "Solar8000/ART_SBP": [120] * n,
        "Solar8000/ART_DBP": [70] * 11 + [130],
    }, dtype=np.float32)
    out, counts = to_canonical(raw, configs.signals, interval_s=1, carry_forward_s=1)
    # ART first; a one-second gap is bridged; NIBP fills the rest, held for up to hold_s
    assert out["map"].tolist()[:9] == [80, 81, 81, 70, 70, 70, 70, 70, 70]
    assert out["map"].tolist()[9:11] == [85, 86]
    assert np.isnan(out["map"].iloc[11]), "DBP above SBP: pressures removed"
    # 10/min is impossible: cleaned; the primary track's reading a second earlier is carried over it
    assert out["hr"].tolist()[:4] == [60, 60, 62, 62]
    assert out["hr"].tolist()[4:] == [64, 65, 66, 67, 68, 69, 70, 71]
    assert counts.counts["map"]["above_valid"] == 1
    assert counts.counts["hr"]["below_valid"] == 1
    assert counts.counts["sbp"]["dbp_not_below_sbp"] == 1
    assert out["temp"].isna().all() and out.dtypes.eq(np.float32).all()


def test_select_cases_by_tracks_duration_and_anaesthesia(configs):
    cases = pd.DataFrame({"caseid": [1, 2, 3, 4], "casestart": 0, "caseend": [7200, 7200, 7200, 600],
                          "ane_type": ["General", "Spinal", "General", "General"]})
    trks = pd.DataFrame({"caseid": [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4],
                         "tname": ["Solar8000/HR", "Solar8000/PLETH_SPO2", "Solar8000/NIBP_MBP"] * 2
                         + ["Solar8000/HR", "Solar8000/PLETH_SPO2"]
                         + ["Solar8000/HR", "Solar8000/PLETH_SPO2", "Solar8000/ART_MBP"]})
    p = load_params(ROOT / "params.yaml").ingest_vitaldb.query
    assert select_cases(cases, trks, p, configs.signals) == [1]


# --------------------------------------------------------------------------------------------------
# .vital files: real fixtures, round trip, corrupt files
# --------------------------------------------------------------------------------------------------


def test_real_intellivue_fixtures(tmp_path, configs):
    local = tmp_path / "vital"
    local.mkdir()
    for f in VITAL_FIXTURES:
        shutil.copy(f, local)
    code, manifest = run_stage(tmp_path, {"sources": ["local"], "local_dir": str(local)})
    assert code == 0 and manifest["status"] == "ok"
    assert manifest["cases_by_source"]["vitaldb-local"] == 3
    ds = read_dataset(tmp_path / "out")
    v = ds.vitals
    lengths = v.groupby("patient_id").size().to_dict()
    # seconds covered by the numeric tracks of the 37 s, 219 s and 26 s recordings
    assert lengths == {"vitaldb-test_data_demo": 35, "vitaldb-test_intelliue_demo2": 218,
                       "vitaldb-test_intellivue_demo1": 25}
    # IntelliVue demo mode: HR 60, SpO2 95, ABP mean 91, RR 15
    assert v["hr"].dropna().eq(60).all() and v["spo2"].dropna().eq(95).all()
    assert v["map"].dropna().eq(91).all() and v["rr"].dropna().eq(15).all()
    assert v["hr"].notna().mean() > 0.9
    assert v["temp"].isna().all() and v["etco2"].isna().all()
    assert set(ds.patients["bp_mode"]) == {"arterial"}


def test_round_trip_values_survive(tmp_path, small_dataset, configs):
    case = synthetic_case(small_dataset, "S0000")
    local = tmp_path / "vital"
    write_vital_file(case, local / "S0000.vital", SOLAR, start_epoch_s=1.7e9)
    raw = read_vital(local / "S0000.vital", configs.signals.all_tracks(), 1)
    assert len(raw) == len(case)
    code, manifest = run_stage(tmp_path, {"sources": ["local"], "local_dir": str(local), "carry_forward_s": 0})
    assert code == 0
    back = read_dataset(tmp_path / "out").vitals
    for s in configs.signals.keys:
        np.testing.assert_array_equal(back[s].to_numpy(), case[s].to_numpy(), err_msg=s)
    # and the labels follow, because the same function labels both
    assert (back["alarm"].to_numpy() == case["alarm"].to_numpy()).all()


def test_corrupt_files_are_reported_and_skipped(tmp_path, small_dataset):
    local = tmp_path / "vital"
    local.mkdir()
    shutil.copy(VITAL_FIXTURES[0], local / "good.vital")
    data = VITAL_FIXTURES[1].read_bytes()
    (local / "truncated.vital").write_bytes(data[: len(data) // 3])
    (local / "garbage.vital").write_bytes(b"this is not a vital file at all")
    with pytest.raises(VitalFileError, match=r"truncated\.vital: truncated or corrupt"):
        read_vital(local / "truncated.vital", ["Intellivue/HR"], 1)
    code, manifest = run_stage(tmp_path, {"sources": ["local"], "local_dir": str(local)})
    assert code == 0 and manifest["status"] == "ok"
    assert manifest["cases_by_source"]["vitaldb-local"] == 1
    failed = {f["case"]: f["error"] for f in manifest["failures"]}
    assert set(failed) == {"truncated", "garbage"}
    assert "garbage.vital" in failed["garbage"] and "export it again" in failed["garbage"]
    assert read_dataset(tmp_path / "out").patients["patient_id"].tolist() == ["vitaldb-good"]


# --------------------------------------------------------------------------------------------------
# the online path
# --------------------------------------------------------------------------------------------------


def test_api_query_download_and_cache(tmp_path, api):
    code, manifest = run_stage(tmp_path, api_params(api, tmp_path))
    assert code == 0, manifest
    assert manifest["cases_by_source"] == {"vitaldb-local": 0, "vitaldb-api": 2, "vitaldb-cache": 0}
    first = read_dataset(tmp_path / "out")
    assert sorted(first.patients["patient_id"]) == ["vitaldb-1", "vitaldb-5"]
    assert api.requests["/1.0.1/1.vital"] == 1 and api.requests["/1.0.1/2.vital"] == 0
    cached = sorted(p.name.split("__")[0] for p in (tmp_path / "cache").glob("case-*.parquet"))
    assert cached == ["case-1", "case-5"]
    assert not list((tmp_path / "cache").rglob("*.tmp")) and not list((tmp_path / "cache").rglob("*.vital"))

    code, manifest = run_stage(tmp_path, api_params(api, tmp_path))
    assert manifest["cases_by_source"] == {"vitaldb-local": 0, "vitaldb-api": 0, "vitaldb-cache": 2}
    assert api.requests["/1.0.1/1.vital"] == 1, "a cached case is never downloaded twice"
    pd.testing.assert_frame_equal(read_dataset(tmp_path / "out").vitals, first.vitals)


def test_api_retries_transient_errors(tmp_path, api):
    api.fail_first["/1.0.1/1.vital"] = 2
    code, manifest = run_stage(tmp_path, api_params(api, tmp_path, case_ids=[1]))
    assert code == 0 and manifest["cases_by_source"]["vitaldb-api"] == 1
    assert api.requests["/1.0.1/1.vital"] == 3


def test_api_cut_off_download_never_counts_as_cached(tmp_path, api):
    api.cut_off.add("/1.0.1/5.vital")
    code, manifest = run_stage(tmp_path, api_params(api, tmp_path, case_ids=[1, 5, 99]))
    assert code == 0
    failed = {f["case"]: f["error"] for f in manifest["failures"]}
    assert set(failed) == {"5", "99"}
    assert "HTTPError" in failed["99"] and api.requests["/1.0.1/99.vital"] == 1, "a 404 is not retried"
    assert api.requests["/1.0.1/5.vital"] == 3, "a cut-off body is retried"
    assert not list((tmp_path / "cache").glob("case-5__*")) and not list((tmp_path / "cache").rglob("*.tmp"))
    api.cut_off.clear()
    code, manifest = run_stage(tmp_path, api_params(api, tmp_path, case_ids=[1, 5]))
    assert manifest["cases_by_source"] == {"vitaldb-local": 0, "vitaldb-api": 1, "vitaldb-cache": 1}


def test_unreachable_api_falls_back_to_cache_then_to_empty(tmp_path, api):
    code, _ = run_stage(tmp_path, api_params(api, tmp_path))
    assert code == 0
    api.close()
    gone = api_params(api, tmp_path)  # query mode: the tables cannot be fetched any more
    shutil.rmtree(tmp_path / "cache" / "tables")
    code, manifest = run_stage(tmp_path, gone)
    assert code == 0 and manifest["status"] == "ok"
    assert manifest["cases_by_source"]["vitaldb-cache"] == 2
    assert any("unreachable" in r for r in manifest["reasons"])

    empty = tmp_path / "nothing"
    empty.mkdir()
    code, manifest = run_stage(empty, {**gone, "cache_dir": str(empty / "cache")})
    assert code == 0 and manifest["status"] == "empty" and manifest["patients"] == 0
    ds = read_dataset(empty / "out")
    assert ds.vitals.empty and ds.vitals["hr"].dtype == np.float32 and ds.vitals["label"].dtype == np.int8


def test_require_data_fails_and_writes_nothing(tmp_path):
    unreachable = {"sources": ["local", "api"], "local_dir": str(tmp_path / "none"),
                   "api_url": "http://nonexistent.invalid", "cache_dir": str(tmp_path / "cache"),
                   "require_data": True}
    code, manifest = run_stage(tmp_path, unreachable)
    assert code == 2 and manifest == {}
    assert not (tmp_path / "out").exists()
