"""The bed board, the case report and the monitoring of the served bento (`bentoml serve`, the session's `served`),
driven over HTTP and in real headless Chromium (Debian's, through Playwright): a bed streamed into an alarm appears
on the board, opens, is explained and acknowledged; a silent signal raises a monitoring alert on the board's header
and on /metrics. Screenshots go to `test-artifacts/board/` (the docs' pictures are copies of them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.pipeline.conftest import Client, chromium_page

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SHOTS = Path(os.environ.get("BIOSTREAM_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "board"
NORMAL = {"hr": 78.0, "spo2": 97.0, "sbp": 118.0, "dbp": 68.0, "map": 85.0, "rr": 14.0, "temp": 36.8}
SPREAD = {"hr": 3.0, "spo2": 0.8, "sbp": 4.0, "dbp": 3.0, "map": 3.0, "rr": 1.5, "temp": 0.1}  # seeded noise


def item(bed: str, start: int, n: int, ramp_s: int = 120, off_after_s: int | None = None,
         **targets: float | None) -> dict:
    """`n` seconds of a bed from `start`: normal values with seeded noise (a live sensor: no technical signature),
    those in `targets` moving to their target over `ramp_s` seconds, then holding it (None: the signal is read for
    `off_after_s` seconds, then absent: a probe off)."""
    rng = np.random.default_rng(start % 1000)
    vitals = {}
    for s, v in NORMAL.items():
        goal = targets.get(s, v)
        ramp = v + ((v if goal is None else goal) - v) * np.minimum(1.0, np.arange(n) / ramp_s)
        x = np.round(ramp + rng.normal(0, SPREAD[s], n), 1)
        if s == "spo2":
            x = np.minimum(x, 100.0)
        values = [float(a) for a in x]
        if s in targets and goal is None:
            values = values[:off_after_s or 0] + [None] * (n - (off_after_s or 0))
        vitals[s] = values
    return {"bed": bed, "start": start, "vitals": vitals}


@pytest.fixture(scope="module")
def page(served):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(1500, 900, 30_000) as pg:
        yield pg


def test_the_board_page_is_open_and_its_data_need_a_clinician(served):
    port, _, keys = served
    status, page = Client(port).get_json("/board")
    assert status == 200 and "<title>BioStream bed board</title>" in page  # no key: no patient data in it
    for role in ("gateway", "integrator"):
        status, out = Client(port, keys[role]).get_json("/beds")
        assert status == 403 and "clinician" in out["error"], out
    status, out = Client(port, keys["clinician"]).get_json("/beds?size=500")
    assert status == 400 and "size" in out["error"]
    status, out = Client(port, keys["clinician"]).get_json("/monitoring")
    assert status == 200 and "alerts" in out, out


def test_a_bed_alarms_on_the_board_is_opened_explained_acknowledged_and_reported(served, page, tmp_path):
    port, _, keys = served
    now = int(time.time())
    bed = f"ward3-bed{now % 100000}"
    gateway = Client(port, keys["gateway"])
    status, out = gateway.post("/ingest", {"samples": [item(bed, now - 500, 300)]})  # 5 normal minutes
    assert status == 200 and out["problems"] == [], out
    page.goto(f"http://127.0.0.1:{port}/board")
    page.get_by_test_id("key-input").fill(keys["clinician"])
    page.get_by_test_id("key-input").press("Enter")  # Enter uses the key, as the button does
    page.get_by_test_id(f"bed-{bed}").wait_for()
    # MAP falling to 52 over 2 min and staying (under the bedside limit of 65 for 2 min): the floor's hypotension
    # rule opens a physiological episode
    status, out = gateway.post("/ingest", {"samples": [item(bed, now - 200, 200, map=52.0, sbp=78.0, dbp=40.0)]})
    sent = time.monotonic()
    assert status == 200, out
    opened = [e for b in out["beds"] for e in b["opened"] if e["alarm_class"] != "advisory"]  # an advisory may come
    assert opened and opened[0]["alarm_class"] == "physiological", out                     # too, yellow, beside it
    alarm = page.get_by_test_id(f"alarm-{bed}")
    alarm.locator("span.alarm.phys").wait_for(timeout=10_000)  # red ALARM (an advisory beside it is yellow)
    seen_s = time.monotonic() - sent
    (SHOTS / "latency.txt").write_text(f"alarm on the board {seen_s:.2f} s after POST /ingest answered\n")
    assert "map" in alarm.inner_text()
    # open alarms first: only unacknowledged physiological alarms (open longer: another test's bed) before it
    order = page.eval_on_selector_all("tbody#beds tr", "rows => rows.map((r) => [r.dataset.testid, r.className])")
    mine = [t for t, _ in order].index(f"bed-{bed}")
    assert all("phys" in c.split() and "acked" not in c.split() for _, c in order[:mine + 1]), order[:mine + 1]
    page.screenshot(path=str(SHOTS / "board.png"))
    page.get_by_test_id(f"ack-{bed}").click()
    # "<key id> at <time>" in its row's acknowledgement cell (an advisory's reason beside may say "at" too)
    page.get_by_test_id(f"bed-{bed}").get_by_role("cell", name=re.compile(r" at \d\d:\d\d:\d\d UTC$")).wait_for()
    status, episodes = Client(port, keys["clinician"]).get_json(f"/beds/{bed}/episodes")
    episodes = {"episodes": [e for e in episodes["episodes"] if e["alarm_class"] != "advisory"]}  # the alarms
    key_id = keys["clinician"].split("_")[1]
    assert episodes["episodes"][-1]["acknowledged_by"] == key_id, episodes
    page.get_by_role("link", name=bed).click()
    page.get_by_test_id("bed-title").wait_for()
    start = episodes["episodes"][-1]["start"]
    page.get_by_test_id(f"explain-{start}").click()
    shown = page.get_by_test_id("top-signals").inner_text()
    status, explained = Client(port, keys["clinician"]).get_json(f"/beds/{bed}/episodes/{start}/explain")
    assert status == 200 and shown == ", ".join(explained["top_signals"]) and "map" in shown, explained
    assert page.locator("line[data-limit='hypotension']").count() == 1  # the bedside limit on the MAP chart
    assert page.locator("#charts svg text").count() >= 5  # a time axis
    page.screenshot(path=str(SHOTS / "bed.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_test_id("report-pdf").click()
    pdf = tmp_path / "case.pdf"
    download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "p")],
                   check=True, timeout=60)
    assert list(tmp_path.glob("p-*.png"))
    client = Client(port, keys["clinician"])
    client.conn.request("GET", f"/beds/{bed}/report?format=text",
                        headers={"Authorization": f"Bearer {keys['clinician']}"})
    resp = client.conn.getresponse()
    summary = resp.read().decode()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/plain")
    assert "1 physiological" in summary and f"acknowledged by {key_id}" in summary, summary


def test_an_advisory_shows_yellow_before_any_alarm_and_is_acknowledged(served, page):
    """A bed whose MAP drifts down from 85 over 15 min, still above the bedside limit of 65 (no alarm): the served
    advisory opens, with its reason, in the /ingest answer, on the board (yellow, counted apart) and on the bed's
    page, where a clinician acknowledges it (`?advisory=<kind>`, audited as such)."""
    port, _, keys = served
    client = Client(port, keys["clinician"])
    status, meta = client.post("/metadata", {})
    assert status == 200 and meta["advisory"] is not None, meta
    # dated more than the monitoring period (1 h) back, so the other tests' monitoring reads none of its seconds (a
    # probe off is judged by its share of all beds' seconds); a gateway replaying its buffer sends such seconds
    t0 = int(time.time()) - 7200
    bed = f"ward5-bed{t0 % 100000}"
    gateway = Client(port, keys["gateway"])
    status, out = gateway.post("/ingest", {"samples": [item(bed, t0, 1200)]})  # 20 calm minutes
    assert status == 200 and not [e for b in out["beds"] for e in b["opened"]], out
    # then 15 min of MAP falling 1.5 mmHg a minute (85 -> 62.5 over 25 min, sent up to 67.5: no bedside limit crossed)
    status, out = gateway.post("/ingest", {"samples": [item(bed, t0 + 1200, 700, ramp_s=1500, map=62.5, sbp=95.5,
                                                            dbp=45.5)]})
    assert status == 200, out
    opened = [e for b in out["beds"] for e in b["opened"]]
    # advisories only, no alarm; the noise may flicker MAP across the advisory's limit first (a short advisory that
    # closes more than its refractory period before the next), so the one the board shows is the one still open
    assert opened and {e["alarm_class"] for e in opened} == {"advisory"}, (meta["advisory"]["source"], opened)
    still = [e for e in opened if e["open"]]
    assert len(still) == 1, opened
    advisory = still[0]
    assert advisory["kind"] == "hypotension" and advisory["reason"].startswith("MAP "), advisory
    assert any(s["advisory"] for b in out["beds"] for s in b["seconds"])
    page.goto(f"http://127.0.0.1:{port}/board")
    if page.evaluate("sessionStorage.getItem('biostream.key')") is None:  # the tab keeps the key of a test before
        page.get_by_test_id("key-input").fill(keys["clinician"])
        page.get_by_test_id("key-input").press("Enter")
    shown = page.get_by_test_id(f"advisory-{bed}")
    shown.wait_for(timeout=10_000)
    assert shown.inner_text() == f"ADVISORY {advisory['reason']}"
    assert "adv" in page.get_by_test_id(f"bed-{bed}").get_attribute("class")
    assert page.get_by_test_id("count-adv").inner_text().endswith(("advisory", "advisories"))
    status, board = client.get_json(f"/beds?q={bed}")
    assert board["beds"][0]["alarm"] is None and board["beds"][0]["advisory"]["reason"] == advisory["reason"]
    assert board["counts"]["advisory"] >= 1
    page.screenshot(path=str(SHOTS / "board-advisory.png"))
    page.get_by_role("link", name=bed).click()
    page.get_by_test_id("bed-title").wait_for()
    page.locator("#episodes tr.adv button[data-ack]").first.click()  # the newest (a flicker before: another row)
    page.locator("#episodes tr.adv.acked").wait_for(timeout=10_000)
    key_id = keys["clinician"].split("_")[1]
    status, episodes = client.get_json(f"/beds/{bed}/episodes")
    acked = [e for e in episodes["episodes"] if e["alarm_class"] == "advisory"]
    assert acked and any(e["acknowledged_by"] == key_id for e in acked), episodes
    page.screenshot(path=str(SHOTS / "bed-advisory.png"), full_page=True)
    time.sleep(2.5)  # each worker writes its audit entries once a second
    status, audit = Client(port, keys["admin"]).get_json(f"/audit?bed={bed}")
    assert any(e["action"] == "POST /beds/{bed}/episodes/{start}/ack" and e["status"] == 200
               and (e["detail"] or "").startswith("hypotension advisory of ") for e in audit["entries"]), audit


def test_a_probe_off_raises_a_monitoring_alert_on_the_board_and_metrics(served, page):
    """SpO2 read for a minute, then absent for 11 (a probe off): the service's check (every 3 s in the small
    profile) raises the missingness alert: GET /monitoring, the board's header row and the /metrics gauges say so."""
    port, _, keys = served
    now = int(time.time())
    bed = f"ward3-nospo2-{now % 100000}"
    status, out = Client(port, keys["gateway"]).post("/ingest", {"samples": [item(bed, now - 720, 720, off_after_s=60,
                                                                                  spo2=None)]})
    assert status == 200, out
    clinician = Client(port, keys["clinician"])
    deadline = time.monotonic() + 60
    while True:
        status, state = clinician.get_json("/monitoring")
        if any(a["check"] == "missing:spo2" for a in state.get("alerts", [])) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert any(a["check"] == "missing:spo2" for a in state["alerts"]), state
    page.goto(f"http://127.0.0.1:{port}/board")
    page.get_by_test_id("monitoring-alert").get_by_text("SpO2 missing").wait_for()
    page.screenshot(path=str(SHOTS / "board-monitoring.png"))
    status, metrics = Client(port, keys["admin"]).get_json("/metrics")
    assert status == 200
    assert 'biostream_monitoring_alert{check="missing:spo2"} 1.0' in metrics, metrics[-3000:]
    assert 'biostream_drift_psi{signal="hr"}' in metrics and "biostream_live_recall" in metrics


def test_report_and_monitor_commands_with_the_served_model_and_mlflow(repo, served):
    """`biostream report` and `biostream monitor --mlflow` in the project folder, on the store the service writes:
    the report's files, and a monitoring run in MLflow that the serving model version's tag and card point at."""
    import json

    from mlflow import MlflowClient

    from tests.pipeline.conftest import env_for

    port, bento, keys = served
    now = int(time.time())
    bed = f"ward4-cli-{now % 100000}"
    status, out = Client(port, keys["gateway"]).post("/ingest", {"samples": [item(bed, now - 700, 700)]})
    assert status == 200, out
    env = env_for(repo)
    env["BENTOML_HOME"] = str(repo / bento["bentoml_home"])
    env["BIOSTREAM_STREAM_STORE"] = f"sqlite:///{repo / 'stores' / 'streams.db'}"
    cli = str(Path(shutil.which("biostream", path=env["PATH"]) or "biostream"))
    made = subprocess.run([cli, "report", "--bed", bed, "--out", "reports"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert {Path(p).name for p in made.stdout.split()} == {f"case-{bed}.html", f"case-{bed}.pdf", f"case-{bed}.txt"}
    assert "0 physiological, 0 technical" in (repo / "reports" / f"case-{bed}.txt").read_text()
    example = subprocess.run([sys.executable, "examples/stream_a_bed.py", "--url", f"http://127.0.0.1:{port}",
                              "--bed", f"{bed}-example"], cwd=repo, capture_output=True, text=True, timeout=120,
                             env={**env, "BIOSTREAM_GATEWAY_KEY": keys["gateway"]})  # the docs' example, as is
    assert example.returncode == 0, example.stderr[-2000:]
    opened = json.loads(example.stdout)  # the alarm, and the served advisory that warned of it (before or with it)
    assert [e["alarm_class"] for e in opened if e["alarm_class"] != "advisory"] == ["physiological"], example.stdout
    real = repo / "data/external/real/mimic3_p000020_numerics_1perMin.csv"  # a real ICU record, scored whole
    made = subprocess.run([cli, "report", "--recording", str(real), "--start", "2026-01-01T00:00:00Z", "--format",
                           "pdf,text", "--out", "reports"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    summary = (repo / "reports" / f"case-{real.stem}.txt").read_text()
    assert f"recording {real.stem}, 2026-01-01 00:00:00 UTC" in summary and "Scored by" in summary, summary
    bad = subprocess.run([cli, "report", "--bed", "nobody-here", "--out", "reports"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no stored second" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    ran = subprocess.run([cli, "monitor", "--mlflow"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    said = json.loads(ran.stdout)
    assert said["period"]["seconds"] >= 700 and (repo / "reports/monitoring/monitoring.html").is_file()
    client = MlflowClient(f"sqlite:///{repo / 'stores/mlflow.db'}")
    run = client.get_run(said["mlflow"]["run_id"])
    assert run.data.tags["stage"] == "monitor" and "alerts" in run.data.metrics
    status, meta = Client(port, keys["integrator"]).post("/metadata", {})
    assert status == 200, meta
    name, version = meta["model"]["name"], str(meta["model"]["version"])  # the version the service serves
    mv = client.get_model_version(name, version)
    assert run.data.tags["model_version"] == version
    assert mv.tags["monitoring_report"] == said["mlflow"]["report"] and said["mlflow"]["report"] in mv.description
    names = {a.path for a in client.list_artifacts(run.info.run_id, "monitoring")}
    assert names == {"monitoring/monitoring.json", "monitoring/monitoring.html"}
