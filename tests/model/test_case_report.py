"""The case report (biostream.reporting.case) of a bed streamed into a real sqlite store: its numbers are the
store's, the PDF opens (poppler's pdftoppm renders every page), the HTML and the text say the same."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime

import numpy as np
import pytest

from biostream.reporting.case import case_of_recording, render, when
from biostream.reporting.explain import explain_episode, stored_window
from biostream.serving.streaming.cases import case_of_bed
from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.store import Store, sqlite_url
from tests.conftest import ROOT
from tests.model.test_streams import START, params

SHOTS = ROOT / "test-artifacts" / "case-report"


@pytest.fixture(scope="module")
def streamed(alarming, tmp_path_factory):
    """The alarming stretch streamed in 60-s messages into a store, one episode acknowledged."""
    scorer, pid, values = alarming
    store = Store(sqlite_url(tmp_path_factory.mktemp("report") / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    for a in range(0, values.shape[1], 60):
        engine.ingest([Chunk(pid, START + a, values[:, a:a + 60].copy())], now=float(a))
    engine.close([pid])
    first = store.episodes(pid)[0]
    store.acknowledge(pid, first["start"], "k_clinician", START + 2000.0)
    return scorer, pid, values, store


def test_the_case_holds_the_stores_seconds_episodes_and_time_beyond_each_limit(streamed):
    scorer, pid, values, store = streamed
    n = values.shape[1]
    case = case_of_bed(store, scorer, pid, START, START + n)
    rows = store.seconds(pid, limit=10 ** 6)
    assert case.recorded_s == len(rows) and case.times.tolist() == [r["second"] for r in rows]
    np.testing.assert_array_equal(case.scores, [r["score"] for r in rows])
    stored = store.episodes(pid)
    assert [(e.start, e.end, e.alarm_class) for e in case.episodes] == [
        (e["start"], e["end"], e["alarm_class"]) for e in stored]
    assert case.episodes[0].acknowledged_by == "k_clinician"
    assert {e.model_version for e in case.episodes} == {scorer.spec.model_version}  # migration 0003
    vals = np.vstack([np.frombuffer(r["vals"], dtype=np.float64) for r in rows])
    for u, lim in zip(case.under_limits(), case.limits, strict=True):  # counted again from the stored values
        j = scorer.spec.signals.index(lim.signal)
        col = vals[:, j]
        with np.errstate(invalid="ignore"):
            beyond = col < lim.threshold if lim.op == "<" else col > lim.threshold
        assert u["seconds"] == int(beyond.sum()) and u["read_s"] == int((~np.isnan(col)).sum())
    assert any(u["seconds"] for u in case.under_limits()), "the stretch goes beyond a bedside limit"
    ep = case.episodes[0]  # its explanation is the window that opened it, as /explain answers it
    assert ep.explanation == explain_episode(store, scorer, pid, ep.start)
    window = stored_window(store, pid, ep.start, scorer.spec.window_s, len(scorer.spec.signals))
    assert np.isnan(window[:, 0]).all() or window.shape == (len(scorer.spec.signals), scorer.spec.window_s)
    np.testing.assert_array_equal(window[:, -1], vals[case.times.tolist().index(ep.start)])


def test_a_period_holds_only_its_own_seconds(streamed):
    scorer, pid, values, store = streamed
    case = case_of_bed(store, scorer, pid, START + 100, START + 400, explain=False)
    assert case.times.min() >= START + 100 and case.times.max() < START + 400 and case.recorded_s == 300
    assert all(e.start < START + 400 and (e.end is None or e.end > START + 100) for e in case.episodes)


def test_the_pdf_opens_and_its_numbers_are_the_cases(streamed, tmp_path):
    scorer, pid, values, store = streamed
    case = case_of_bed(store, scorer, pid, START, START + values.shape[1])
    pdf = tmp_path / "case.pdf"
    pdf.write_bytes(render(case, "pdf"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(pdf, SHOTS / "case-report.pdf")  # for a reader (and the docs' picture)
    for tool in ("pdftoppm", "pdftotext"):
        assert shutil.which(tool), f"{tool} is missing: `make browser` installs poppler-utils"
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages and all(p.stat().st_size > 2000 for p in pages)  # rendered, not blank files
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())  # words, whatever the table cells' wrapping
    counts = case.counts()
    assert f"Alarm episodes: {counts['physiological']} physiological, {counts['technical']} technical" in text
    for u in case.under_limits():
        assert u["limit"] in text
        if u["seconds"]:
            assert f"{u['minutes']:.1f} min" in text
    opened = when(case.episodes[0].start)
    assert opened[:10] in text and opened[11:19] in text and f"version {scorer.spec.model_version}" in text
    html = render(case, "html").decode()
    assert "data:image/png;base64," in html and f"{counts['physiological']} physiological" in html
    summary = render(case, "text").decode()
    numbers = {float(x) for x in __import__("re").findall(r"\d+(?:\.\d+)?", summary)}
    known = {float(case.recorded_s), *(float(c) for c in counts.values()),
             *(u["minutes"] for u in case.under_limits()), *(float(u["longest_s"]) for u in case.under_limits()),
             *(float(e.duration_s) for e in case.episodes)}
    assert known & numbers >= {float(case.recorded_s), float(counts["physiological"])}


def test_a_recording_gets_the_report_score_series_gives(alarming):
    scorer, pid, values = alarming
    case = case_of_recording(scorer, values, datetime.fromtimestamp(START, UTC), "rec-1")
    from tests.model.test_streams import series_answer

    want = series_answer(scorer, pid, values)
    assert [(e.start - START, e.alarm_class) for e in case.episodes] == [
        (int(e.start.timestamp()) - START, e.alarm_class) for e in want.episodes]
    assert all(e.explanation and e.explanation["top_signals"] is not None for e in case.episodes)
    assert json.loads(json.dumps(case.under_limits()))  # JSON-able numbers
