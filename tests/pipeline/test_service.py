"""The BentoML service over HTTP: a real `bentoml serve` of the bento that the small-profile `dvc repro` built
(`package` stage), on a free port, against the pipeline's own data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from biostream.data.dataset import read_dataset
from biostream.features import recording_windows, windows_at
from biostream.models.alarms import AlarmPolicy, alarm_episodes, apply_policy, class_alarms
from biostream.serving import pack_f32
from biostream.serving.arrow import ARROW_STREAM, windows_to_arrow
from tests.pipeline.conftest import Client

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def meta(served):
    status, body = Client(served).post("/metadata", {})
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def test_data(repo, meta):
    """The evaluate stage's per-second test scores of the served detector, and the raw vitals."""
    scores = pd.read_parquet(repo / "results" / "scores" / f"{meta['detector']}.parquet")
    return scores, read_dataset(repo / "data" / "synthetic").vitals


def _body(window: np.ndarray, signals, pid: str, t: int) -> dict:
    recorded = ~np.isnan(window).all(axis=0)  # seconds before the recording began are not sent
    first = int(np.argmax(recorded))
    return {"patient_id": pid, "time": t,
            "vitals": {s: [None if math.isnan(v) else v for v in window[i, first:].tolist()]
                       for i, s in enumerate(signals)}}


def test_the_bento_serves_the_registry_champion(repo, served, meta):
    register = json.loads((repo / "results" / "register.json").read_text())
    _, bento, _ = served
    assert meta["model"] == {"name": register["model_name"], "version": register["champion_after"],
                             "alias": "champion"}
    assert meta["detector"] == bento["detector"] and meta["threshold"] == pytest.approx(bento["threshold"])
    assert meta["window_s"] == bento["window_s"] > 0
    assert [s["name"] for s in meta["signals"]][:3] == ["hr", "spo2", "sbp"] and meta["metrics"]
    assert meta["threshold"] == 0.0
    if meta["detector"] != "clinical":  # a learned champion carries the bedside rules as its floor
        assert any(f.startswith("hypotension: map < 65 for 60 s") for f in meta["safety"]["floor"]), meta["safety"]
    client = Client(served)
    for path in ("/healthz", "/livez", "/readyz", "/metrics", "/docs.json"):
        assert client.get(path) == 200, path


def test_the_bento_serves_the_registrys_advisory_on_predict_and_score_series(repo, served, meta):
    """The register stage's advisory choice is what /metadata names and what /predict and /score_series answer: on
    a recording whose MAP falls from 85 to 55 mmHg over 40 min (the small profile's real recordings carry no
    pressure), the served advisory opens with its reason in words, as the advisor of the same candidate gives it in
    process (tests/model/test_advisor.py holds it on the real MIMIC records)."""
    from biostream.core.config import Configs
    from biostream.models.advisor import Advisor
    from biostream.models.candidates import Advisories

    chosen = json.loads((repo / "results" / "register.json").read_text())["advisory"]
    adv = meta["advisory"]
    assert chosen["source"] is not None and adv["source"] == chosen["source"] and adv["why"] == chosen["why"]
    assert adv["reads_s"] > 0 and adv["kinds"] and "never delays, replaces or silences an alarm" in adv["note"]
    configs = Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml")
    signals = [s["name"] for s in meta["signals"]]
    advisor = Advisor.build(Advisories.load(repo / "configs/advisories.yaml", configs.rules), adv["source"],
                            configs.rules, configs.signals, tuple(signals), "", "")
    rng = np.random.default_rng(7)
    mean = np.r_[np.full(1800, 85.0), np.linspace(85, 55, 2400), np.full(600, 55.0)] + rng.normal(0, 1.5, 4800)
    steady = {"hr": 75, "spo2": 98, "sbp": 40, "dbp": -15, "rr": 14, "temp": 37.0, "etco2": 38}
    values = np.stack([np.round(mean, 0) if s == "map" else
                       np.round(mean + steady[s], 0) if s in ("sbp", "dbp") else
                       np.round(np.full(4800, float(steady[s])) + rng.normal(0, 0.3, 4800), 1) for s in signals])
    expected = advisor.series(values, tuple(signals))
    assert len(expected.episodes), f"a fall of 30 mmHg in 40 min raises {adv['source']}'s advisory"
    body = {"patient_id": "adv-1", "start": "2026-12-08T00:00:00Z",
            "vitals": {s: [None if math.isnan(v) else v for v in values[i].tolist()] for i, s in enumerate(signals)}}
    status, res = Client(served).post("/score_series", {"series": body})
    assert status == 200, res
    assert res["advisory"] == expected.on.tolist()
    t0 = pd.Timestamp("2026-12-08T00:00:00Z")
    assert [(a["start"], a["end"], a["kind"], a["reason"], a["source"], a["signals"]) for a in res["advisories"]] == [
        ((t0 + pd.Timedelta(seconds=int(e.start_s))).isoformat().replace("+00:00", "Z"),
         (t0 + pd.Timedelta(seconds=int(e.end_s))).isoformat().replace("+00:00", "Z"), e.kind, e.reason,
         adv["source"], e.signals) for e in expected.episodes.itertuples()]
    # /predict: the window ending at the first advisory's start second says so, with the same words
    first = int(expected.episodes["start_s"].iloc[0])
    w = max(meta["window_s"], advisor.reads_s)
    window = values[:, max(0, first - w + 1): first + 1]
    status, preds = Client(served).post("/predict", {"windows": [_body(window, signals, "adv-1",
                                                                       "2026-12-08T01:00:00Z")]})
    assert status == 200, preds
    assert preds[0]["advisory"] is True and preds[0]["advisory_reason"] == expected.episodes["reason"].iloc[0]


def test_predict_matches_the_evaluate_stage_to_1e6(served, meta, test_data):
    scores, vitals = test_data
    signals = [s["name"] for s in meta["signals"]]
    # alarming and quiet seconds, early (a short history) and late in recordings
    pick = pd.concat([scores[scores["alarm"] == 1].sample(8, random_state=0, replace=True),
                      scores[scores["alarm"] == 0].sample(12, random_state=1),
                      scores.groupby("patient_id").head(40).sample(4, random_state=2)]).drop_duplicates()
    windows = windows_at(vitals, signals, meta["window_s"], pick["patient_id"].to_numpy(), pick["time_s"].to_numpy())
    body = {"windows": [_body(w, signals, p, int(t)) for w, p, t in zip(windows, pick["patient_id"], pick["time_s"],
                                                                      strict=True)]}
    status, out = Client(served).post("/predict", body)
    assert status == 200, out
    got = np.array([o["score"] for o in out])
    np.testing.assert_allclose(got, pick["score"].to_numpy(), rtol=0, atol=1e-6)
    assert np.array_equal([o["alarm"] for o in out], got > meta["threshold"])
    for o in out:
        assert o["model"]["alias"] == "champion" and o["threshold"] == meta["threshold"]
        assert not o["top_signals"] or set(o["top_signals"]) <= set(signals)
        assert (o["alarm_class"] in ("physiological", "technical")) if o["alarm"] else o["alarm_class"] is None
    assert any(o["top_signals"] for o in out if o["alarm"]) or not any(o["alarm"] for o in out)
    # the same windows with their signals packed as base64 float32 (NaN = missing): the same answers
    packed = {"windows": [{**w, "vitals": None, "vitals_f32": {k: pack_f32(np.array(v, dtype=float))
                                                              for k, v in w["vitals"].items()}}
                          for w in body["windows"]]}
    status, out_f32 = Client(served).post("/predict", packed)
    assert status == 200, out_f32
    assert out_f32 == out
    # and as an Arrow IPC stream (the same seconds as the JSON windows, NaN = missing; times in seconds): the
    # same answers
    sent = [np.array([[np.nan if v is None else v for v in w["vitals"][s]] for s in signals]) for w in body["windows"]]
    arrow = windows_to_arrow([str(p) for p in pick["patient_id"]], pick["time_s"].astype(float).tolist(),
                             {s: [w[j] for w in sent] for j, s in enumerate(signals)}, compression="lz4")
    status, out_arrow = Client(served).post("/predict", arrow, content_type=ARROW_STREAM)
    assert status == 200, out_arrow
    assert out_arrow == out


def test_score_series_matches_the_evaluate_stage(served, meta, test_data):
    scores, vitals = test_data
    signals = [s["name"] for s in meta["signals"]]
    pid = scores.loc[scores["alarm"] == 1, "patient_id"].iloc[0] if scores["alarm"].any() else scores["patient_id"][0]
    rec = vitals[vitals["patient_id"] == pid]
    values = rec[signals].to_numpy()
    body = {"series": {"patient_id": pid, "start": "2026-11-21T08:00:00Z",
                       "vitals": {s: [None if math.isnan(v) else v for v in values[:, i].tolist()]
                                  for i, s in enumerate(signals)}}}
    status, out = Client(served).post("/score_series", body)
    assert status == 200, out
    want = scores[scores["patient_id"] == pid].sort_values("time_s")
    assert out["seconds"] == len(values) == len(want)
    np.testing.assert_allclose(out["scores"], want["score"].to_numpy(), rtol=0, atol=1e-6)
    # the served model's threshold and alarm policy, applied as `evaluate` applies them (another test's
    # `dvc exp run` may have moved the workspace's alarm params since the champion was trained)
    t = want["time_s"].to_numpy()
    alarm = apply_policy(np.zeros(len(t)), t, want["score"].to_numpy(), meta["threshold"],
                         AlarmPolicy(**meta["alarm_policy"]), immediate=want["rule_fired"].to_numpy() > 0).astype(bool)
    got = np.asarray(out["alarm"], dtype=bool)
    assert np.array_equal(got, alarm), f"{(got != alarm).sum()} of {len(t)} seconds differ"
    assert len(out["episodes"]) == len(alarm_episodes(np.zeros(len(t)), t, alarm))
    for ep in out["episodes"]:
        assert ep["start"] < ep["peak_time"] < ep["end"] or ep["start"] == ep["peak_time"]
        assert ep["alarm_class"] in ("physiological", "technical")
    # each alarm second's class is the one `evaluate` gives it: its episode's, from the seconds' own classes, under
    # the served policy (an episode's extent, and so its class, follows the policy)
    seconds = SimpleNamespace(score=want["score"].to_numpy(), technical=want["technical_second"].to_numpy() > 0,
                              rules=np.where(want["rule_fired"].to_numpy() > 0, 1.0, -1.0))
    classes = class_alarms(np.zeros(len(t)), t, seconds, meta["threshold"], AlarmPolicy(**meta["alarm_policy"]))
    expected = [("technical" if tech else "physiological") if a else None
                for a, tech in zip(alarm, classes["technical"] > 0, strict=True)]
    assert out["alarm_class"] == expected


def test_explain_names_signal_contributions(served, meta, test_data):
    scores, vitals = test_data
    signals = [s["name"] for s in meta["signals"]]
    row = scores.sort_values("score").iloc[-1]
    w = windows_at(vitals, signals, meta["window_s"], np.array([row["patient_id"]]), np.array([row["time_s"]]))[0]
    status, out = Client(served).post("/explain", {"window": _body(w, signals, row["patient_id"], 0)})
    assert status == 200, out
    assert out["score"] == pytest.approx(row["score"], abs=1e-6) and list(out["signals"]) == signals
    assert out["top_signals"] and out["method"]


def _good(meta) -> dict:
    w = meta["window_s"]
    return {"patient_id": "bed-7", "time": "2026-11-21T10:00:00Z",
            "vitals": {"hr": [72.0] * w, "spo2": [98.0] * w, "map": [80.0] * w, "sbp": [120.0] * w,
                       "dbp": [65.0] * w}}


def test_bad_input_gets_a_4xx_that_says_what_is_wrong_and_the_service_stays_healthy(served, meta):
    client = Client(served)
    w, good = meta["window_s"], _good(meta)
    win = json.dumps({"windows": [good]})

    def hr(values):
        return {"windows": [{**good, "vitals": {**good["vitals"], "hr": values}}]}

    corpus = {
        "NaN": (win.replace("[72.0, 72.0", "[NaN, 72.0", 1), "not a finite number"),
        "Infinity": (win.replace("[72.0, 72.0", "[Infinity, 72.0", 1), "not a finite number"),
        "-Infinity": (win.replace("[72.0, 72.0", "[-Infinity, 72.0", 1), "not a finite number"),
        "string value": (hr(["72"] + [72.0] * (w - 1)), "valid number"),
        "boolean value": (hr([True] + [72.0] * (w - 1)), "valid number"),
        "impossible vital": (hr([72.0] * (w - 1) + [900.0]), "outside the physiological range [20, 250]"),
        "negative vital": (hr([-5.0] + [72.0] * (w - 1)), "= -5 /min is outside"),
        "wrong length": (hr([72.0] * (w - 3)), "every signal must cover the same seconds"),
        "too long": ({"windows": [{**good, "vitals": {"hr": [72.0] * (meta["limits"]["max_window_s"] + 1)}}]},
                     "at most"),
        "empty array": ({"windows": [{**good, "vitals": {"hr": []}}]}, "is empty"),
        "no signals": ({"windows": [{**good, "vitals": {}}]}, "no signal sent"),
        "all missing": ({"windows": [{**good, "vitals": {k: [None] * w for k in good["vitals"]}}]},
                        "read are missing"),
        "empty batch": ({"windows": []}, "at least 1"),
        # short windows: a batch of full ones this long is over serve.max_body_mb (413: the next test)
        "oversized batch": ({"windows": [{**good, "vitals": {"hr": [72.0]}}] * (int(meta["limits"]["max_batch_windows"])
                                                                              + 1)}, "at most"),
        "unknown field": ({"windows": [{**good, "ward": "ICU"}]}, "Extra inputs are not permitted"),
        "unknown signal": ({"windows": [{**good, "vitals": {**good["vitals"], "lactate": [1.0] * w}}]},
                           "Extra inputs are not permitted"),
        "missing patient": ({"windows": [{k: v for k, v in good.items() if k != "patient_id"}]}, "patient_id"),
        "bad time": ({"windows": [{**good, "time": "yesterday"}]}, "time"),
        "malformed JSON": (win[:-7], "Invalid JSON"),
        "not an object": ("[1, 2, 3]", "should be an object"),
        "empty body": ("", "windows"),
        "vitals_f32 not base64": ({"windows": [{**good, "vitals": None, "vitals_f32": {"hr": "72,73"}}]},
                                  "not valid base64"),
        "vitals_f32 Infinity": ({"windows": [{**good, "vitals": None, "vitals_f32": {
            "hr": pack_f32([72.0] * (w - 1) + [math.inf])}}]}, "not a finite number; pack NaN"),
        "vitals and vitals_f32": ({"windows": [{**good, "vitals_f32": {"hr": pack_f32([72.0] * w)}}]}, "not both"),
    }
    for content_type in ("multipart/form-data", "text/plain", "application/x-www-form-urlencoded"):
        status, out = client.post("/predict", win, content_type=content_type)
        assert status == 415 and "application/json" in out["error"], (content_type, status, out)
    for name, (body, needle) in corpus.items():
        status, out = client.post("/predict", body)
        assert 400 <= status < 500, (name, status, out)
        assert needle in json.dumps(out), (name, needle, out)
    # Arrow bodies (tests/model/test_arrow_windows.py has every message; here: over HTTP, 4xx, named)
    ok = np.full((2, w), 72.0)
    bad = ok.copy()
    bad[1, 9] = 900.0
    arrow = {
        "impossible vital": (windows_to_arrow(["a", "b"], [0.0, 1.0], {"hr": bad, "spo2": ok + 25}),
                             "row 1 (patient_id 'b'): hr[9] = 900 is outside the physiological range"),
        "unknown column": (windows_to_arrow(["a", "b"], [0.0, 1.0], {"hr": ok, "lactate": ok}), "'lactate'"),
        "not Arrow": (win.encode(), "not a valid Arrow IPC stream"),
        "cut short": (windows_to_arrow(["a", "b"], [0.0, 1.0], {"hr": ok})[:-64], "not a valid Arrow IPC stream"),
        "empty": (b"", "empty body"),
    }
    for name, (body, needle) in arrow.items():
        status, out = client.post("/predict", body, content_type=ARROW_STREAM)
        assert status == 400 and needle in out["error"], (name, status, out)
    status, out = client.post("/explain", b"x", content_type=ARROW_STREAM)
    assert status == 415 and "application/json" in out["error"], out
    status, out = client.post("/score_series", {"series": {"patient_id": "p", "start": 0,
                                                           "vitals": {"hr": [72.0] * 10 + [1e9]}}})
    assert 400 <= status < 500 and "physiological range" in json.dumps(out), out
    status, out = client.post("/explain", {"window": {**good, "vitals": {"spo2": [None] * w}}})
    assert 400 <= status < 500 and "missing" in json.dumps(out), out
    assert client.get("/healthz") == 200 and client.get("/readyz") == 200
    status, out = client.post("/predict", {"windows": [good]})
    assert status == 200 and math.isfinite(out[0]["score"]), out


def test_schemathesis_finds_nothing_with_every_check(served, tmp_path):
    """The whole OpenAPI document fuzzed without a credential and with the key of each role, with every check of
    schemathesis (issue #39): no 5xx, every answer and status as documented, schema-invalid input refused, a method
    not declared 405. What JSON Schema cannot state is in tests/pipeline/schemathesis.toml, with why."""
    from tests.conftest import ROOT

    port = served[0]
    for who, key in [("nobody", None), *served[2].items()]:
        report = tmp_path / who
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "--config-file",
             str(ROOT / "tests" / "pipeline" / "schemathesis.toml"), "run", f"http://127.0.0.1:{port}/docs.json",
             "--url", f"http://127.0.0.1:{port}", "--max-examples", "15",
             "--seed", "1", "--workers", "1", "--suppress-health-check", "all", "--request-timeout", "60",
             "--phases", "examples,coverage,fuzzing", "--no-shrink", "--report", "junit", "--report-dir", str(report),
             *([] if key is None else ["--header", f"Authorization: Bearer {key}"])],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache folder goes there
        assert proc.returncode == 0, who + ": " + proc.stdout[-6000:] + proc.stderr[-2000:]
    tested = {case.get("name") for report in (tmp_path / "integrator").glob("junit-*.xml")
              for case in ElementTree.parse(report).iter("testcase")}
    assert {"POST /ingest", "GET /beds/{bed}/scores", "GET /beds/{bed}/episodes", "GET /alarms", "POST /predict",
            "POST /score_series", "POST /explain"} <= tested, tested


def test_patient_data_needs_a_key_with_the_right_role_and_leaves_an_audit_entry(served):
    port, _, keys = served
    bare = Client(port)  # no key
    for method, path in (("POST", "/predict"), ("POST", "/score_series"), ("POST", "/explain"), ("POST", "/ingest"),
                         ("POST", "/metadata"), ("GET", "/beds/bed-9/scores"), ("GET", "/beds/bed-9/episodes"),
                         ("GET", "/alarms"), ("GET", "/metrics"), ("GET", "/audit"), ("GET", "/beds"),
                         ("GET", "/monitoring"), ("GET", "/beds/bed-9/report"),
                         ("GET", "/beds/bed-9/episodes/1795000000/explain"),
                         ("POST", "/beds/bed-9/episodes/1795000000/ack")):
        status, out = bare.post(path, {}) if method == "POST" else bare.get_json(path)
        assert status == 401 and "Authorization: Bearer" in out["error"], (path, out)
    assert bare.get("/readyz") == 200 and bare.get("/healthz") == 200 and bare.get_json("/docs.json")[0] == 200
    bed = f"audited-{time.time_ns()}"
    status, out = Client(port, keys["gateway"]).post("/ingest", {"samples": [
        {"bed": bed, "start": "2026-11-21T10:15:00Z", "vitals": {"hr": [72]}}]})
    assert status == 200 and out["beds"][0]["bed"] == bed
    for path in (f"/beds/{bed}/scores", "/beds/never-seen/scores"):  # whether the bed exists is not told
        status, out = Client(port, keys["gateway"]).get_json(path)
        assert status == 403 and "needs the role clinician" in out["error"], out
    status, out = Client(port, keys["clinician"]).get_json(f"/beds/{bed}/scores")
    assert status == 200 and len(out["seconds"]) == 1
    status, out = Client(port, keys["integrator"]).post("/ingest", {"samples": []})
    assert status == 403 and "gateway" in out["error"]
    assert Client(port, keys["admin"]).get("/metrics") == 200
    time.sleep(2.5)  # each worker writes its audit entries once a second
    status, out = Client(port, keys["admin"]).get_json(f"/audit?bed={bed}")
    assert status == 200
    assert [(e["role"], e["action"], e["outcome"], e["status"]) for e in out["entries"]] == [
        ("gateway", "POST /ingest", "allowed", 200), ("gateway", "GET /beds/{bed}/scores", "denied", 403),
        ("clinician", "GET /beds/{bed}/scores", "allowed", 200)], out  # issue #39: the bed a message wrote
    status, out = Client(port, keys["admin"]).post("/audit", {"entries": []})
    assert status == 405 and "it takes GET" in out["error"], "the trail is append-only: GET is all it takes"


def test_every_endpoint_is_in_the_openapi_document(served):
    """The stream endpoints (routed by our middleware, not declared to BentoML) are in /docs.json with their
    request and response schemas, beside BentoML's own."""
    status, doc = Client(served).get_json("/docs.json")
    assert status == 200
    paths = doc["paths"]
    for path in ("/predict", "/score_series", "/explain", "/metadata", "/ingest", "/beds/{bed}/scores",
                 "/beds/{bed}/episodes", "/beds/{bed}/episodes/{start}/ack", "/alarms"):
        assert path in paths, path
    ingest = paths["/ingest"]["post"]
    assert set(ingest["requestBody"]["content"]) == {"application/json", "application/vnd.apache.arrow.stream"}
    assert ingest["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/IngestAnswer")
    schemas = doc["components"]["schemas"]
    for ref in ("IngestAnswer", "StreamMessage", "BedScores", "BedEpisodes", "OpenAlarms", "Problem"):
        assert ref in schemas, ref
    assert doc["components"]["securitySchemes"]["bearerKey"]["scheme"] == "bearer"
    assert paths["/predict"]["post"]["security"] == [{"bearerKey": []}]
    assert "401" in paths["/ingest"]["post"]["responses"]
    assert paths["/readyz"]["get"]["security"] == [] and "/audit" in paths
    assert "pattern" in schemas["StreamItem"]["properties"]["bed"]


def test_the_api_reference_in_the_docs_is_the_served_document(served, tmp_path):
    """docs/reference/openapi.json (what the docs' API reference is rendered from) is the served /docs.json, but for
    the bento's version: a change to an endpoint that is not in the docs fails here, naming the file to copy."""
    from tests.conftest import ROOT

    status, doc = Client(served).get_json("/docs.json")
    assert status == 200
    doc["info"].pop("version", None)  # the bento's tag: a new one every build
    committed = ROOT / "docs" / "reference" / "openapi.json"
    fresh = tmp_path / "openapi.json"
    fresh.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    assert committed.exists() and json.loads(committed.read_text()) == doc, (
        f"the service's OpenAPI document changed: review it, then `cp {fresh} {committed}`")


def test_the_four_500s_of_issue_29_are_400s_naming_the_problem(served):
    """Measured against `make serve` on 2026-12-06: each of these answered 500."""
    client = Client(served)
    for path in ("/beds/bed-9/scores", "/beds/bed-9/episodes"):
        for since in ("-99999999999999999999", "99999999999999999999"):
            status, out = client.get_json(f"{path}?since={since}")
            assert status == 400 and "since" in out["error"] and "1970" in out["error"], (path, since, out)
    for start in ("1e300", "-99999999999999999999"):
        status, out = client.post("/ingest", '{"samples": [{"bed": "bed-9", "start": ' + start +
                                  ', "vitals": {"hr": [72]}}]}')
        assert status == 400 and [p["field"] for p in out["problems"]] == ["start"], (start, out)
    status, out = client.get_json("/beds/" + "x" * 5000 + "/scores")
    assert status == 400 and "bed id" in out["error"]
    status, out = client.get_json("/beds/bed%00nul/episodes")
    assert status == 400 and "bed id" in out["error"]
    assert client.get("/readyz") == 200


def test_eight_clients_for_ten_seconds_see_no_error(served, meta):
    body = json.dumps({"windows": [_good(meta)]})
    counts, errors = [0] * 8, []

    def client(i: int) -> None:
        c, end = Client(served), time.monotonic() + 10
        while time.monotonic() < end:
            status, out = c.post("/predict", body)
            if status != 200 or not math.isfinite(out[0]["score"]):
                errors.append((status, out))
                return
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert min(counts) > 0, counts  # every client was served
    assert Client(served).get("/healthz") == 200


def test_recording_windows_match_windows_at(test_data, meta):
    """The series endpoint's windows (recording_windows from the first second) are evaluate's windows."""
    scores, vitals = test_data
    signals = [s["name"] for s in meta["signals"]]
    pid = scores["patient_id"].iloc[0]
    rec = vitals[vitals["patient_id"] == pid]
    ends = np.array([0, 5, len(rec) - 1])
    a = recording_windows(rec[signals].to_numpy(), meta["window_s"], ends)
    b = windows_at(vitals, signals, meta["window_s"], np.array([pid] * 3), rec["time_s"].to_numpy()[ends])
    np.testing.assert_array_equal(a, b)


def test_a_bed_streamed_through_ingest_gets_what_score_series_gives(served, meta, test_data):
    """A test patient streamed to POST /ingest a few seconds per message (with a second bed beside it in every
    message) gets the scores, alarms and episodes `score_series` answers for the whole recording; GET answers
    them back from the store, and the open alarms of all beds."""
    scores, vitals = test_data
    signals = [s["name"] for s in meta["signals"]]
    pid = scores.loc[scores["alarm"] == 1, "patient_id"].iloc[0] if scores["alarm"].any() else scores["patient_id"][0]
    values = vitals[vitals["patient_id"] == pid][signals].to_numpy()[:900]
    start = 1795000000  # seconds since the epoch
    client = Client(served)
    status, whole = client.post("/score_series", {"series": {"patient_id": pid, "start": start, "vitals": {
        s: [None if math.isnan(v) else v for v in values[:, i].tolist()] for i, s in enumerate(signals)}}})
    assert status == 200, whole
    bed = f"stream-{pid}-{time.time_ns()}"  # the store outlives one test run
    other = bed + "-other"
    got, opened = [], 0
    for a in range(0, len(values), 7):
        part = values[a:a + 7]
        items = [{"bed": b, "start": start + a,
                  "vitals": {s: [None if math.isnan(v) else v for v in part[:, i].tolist()]
                             for i, s in enumerate(signals)}} for b in (bed, other)]
        status, out = client.post("/ingest", {"samples": items})
        assert status == 200 and out["problems"] == [], out
        mine = next(x for x in out["beds"] if x["bed"] == bed)
        got += [x["score"] for x in mine["seconds"]]
        opened += len(mine["opened"])
    np.testing.assert_allclose(got, whole["scores"], rtol=0, atol=1e-6)
    status, stored = client.get_json(f"/beds/{bed}/scores?limit=900")
    assert status == 200 and len(stored["seconds"]) == len(values)
    np.testing.assert_allclose([x["score"] for x in stored["seconds"]], whole["scores"], rtol=0, atol=1e-6)
    # per second, alarm after the policy; an episode still open at the end of the stream reads as alarm up to its
    # last alarm second, as score_series ends it there
    assert [x["alarm"] for x in stored["seconds"]] == whole["alarm"]
    assert [x["alarm_class"] for x in stored["seconds"]] == whole["alarm_class"]
    # the advisory beside them, seconds and episodes, as score_series gives it (its merge applied in the store too)
    assert [x["advisory"] for x in stored["seconds"]] == whole["advisory"]
    status, both = client.get_json(f"/beds/{bed}/episodes")
    advisories = [e for e in both["episodes"] if e["alarm_class"] == "advisory"]
    assert [(e["start"], e["kind"], e["reason"]) for e in advisories] == [
        (w["start"], w["kind"], w["reason"]) for w in whole["advisories"]]
    assert all(e["end"] == w["end"] or (e["open"] and e["end"] is None)
               for e, w in zip(advisories, whole["advisories"], strict=True))
    eps = {"episodes": [e for e in both["episodes"] if e["alarm_class"] != "advisory"]}
    assert status == 200 and opened == len(both["episodes"]) and len(eps["episodes"]) == len(whole["episodes"])
    for e, w in zip(eps["episodes"], whole["episodes"], strict=True):
        assert (e["start"], e["alarm_class"], e["peak_time"]) == (w["start"], w["alarm_class"], w["peak_time"])
        assert e["end"] == w["end"] or (e["open"] and e["end"] is None)
    status, alarms = client.get_json("/alarms")
    assert status == 200 and {e["bed"] for e in alarms["open"]} >= {e["bed"] for e in eps["episodes"] if e["open"]}
    # a clinician acknowledges an episode: who and when are kept on it (the key chosen by its role: clinician)
    start_of = eps["episodes"][0]["start"] if eps["episodes"] else str(start)
    status, out = client.post(f"/beds/{bed}/episodes/{start_of}/ack", {})
    if eps["episodes"]:
        assert status == 200 and out["episode"]["acknowledged_by"] == client.keys["clinician"].split("_")[1], out
        status, again = client.get_json(f"/beds/{bed}/episodes")
        alarms = [e for e in again["episodes"] if e["alarm_class"] != "advisory"]
        assert alarms[0]["acknowledged_at"] == out["episode"]["acknowledged_at"]
    else:
        assert status == 404 and "no alarm episode" in out["error"], out
    # the same seconds again: repeats, nothing scored twice
    status, out = client.post("/ingest", {"samples": [{"bed": bed, "start": start, "vitals": {"hr": [70.0]}}]})
    assert status == 200 and out["beds"][0]["seconds"] == [] and out["beds"][0]["repeated"] == 1
    # Arrow: one row per bed and second
    table = pa.table({"bed": [bed, bed], "time": pa.array([start + 900, start + 901], pa.float64()),
                      "hr": pa.array([72.0, None], pa.float32()), "map": pa.array([80.0, 79.0], pa.float32())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    status, out = client.post("/ingest", sink.getvalue().to_pybytes(), ARROW_STREAM)
    assert status == 200 and len(out["beds"][0]["seconds"]) == 2, out


def test_ingest_names_what_it_refuses_and_keeps_the_rest(served, meta):
    client = Client(served)
    bed = f"bad-{time.time_ns()}"
    status, out = client.post("/ingest", {"samples": [
        {"bed": bed, "start": "2026-11-21T10:15:00Z", "vitals": {"hr": [72, 400, 74]}},
        {"bed": bed + "-x", "start": "2026-11-21T10:15:00Z", "vitals": {"hr": [72], "map": [80, 81]}},
        {"bed": bed + "-y", "start": "yesterday", "vitals": {"hr": [72]}}]})
    assert status == 200 and [b["bed"] for b in out["beds"]] == [bed], out
    assert len(out["beds"][0]["seconds"]) == 3, "the out-of-range value is stored as missing, its second kept"
    problems = {(p["bed"], p["field"]): p for p in out["problems"]}
    assert problems[(bed, "vitals.hr[1]")]["value"] == 400 and "250" in problems[(bed, "vitals.hr[1]")]["limit"]
    assert problems[(bed + "-x", "vitals")]["kept"] == "nothing of this item"
    assert problems[(bed + "-y", "start")]["value"] == "yesterday"
    status, out = client.post("/ingest", {"samples": [{"bed": 3}]})
    assert status == 400 and out["problems"][0]["field"] == "bed"
    status, out = client.post("/ingest", b"{not json")
    assert status == 400 and "not JSON" in out["error"]
    status, out = client.get_json("/beds/nobody/scores?since=yesterday")
    assert status == 400 and "since" in out["error"]
    assert Client(served, served[2]["clinician"]).get_json("/beds/x/elsewhere")[0] == 404  # no such endpoint


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(served, meta):
    """Every endpoint refuses a JSON body over serve.max_body_mb with 413, without parsing it: the answer comes
    in about the time the body takes to send (the 14.7 MB /predict body the issue measured took 2.9 s to parse)."""
    client = Client(served)
    limit_mb = 8  # params.yaml: serve.max_body_mb
    body = b'{"windows": [' + b",".join([b'{"patient_id": "p", "time": 0, "vitals": {"hr": [72]}}'] * 300_000) + b"]}"
    assert len(body) > limit_mb << 20
    for path in ("/predict", "/score_series", "/explain", "/ingest", "/metadata"):
        t0 = time.perf_counter()
        status, out = client.post(path, body)
        took = time.perf_counter() - t0
        assert status == 413 and f"over {limit_mb << 20} bytes" in out["error"] and "serve.max_body_mb" in out["error"]
        assert took < 1.5, f"{path}: {took:.2f} s"
        client = Client(served)  # the server may close a connection whose body it did not read
    assert client.get("/readyz") == 200
