"""The ward's bed board: `GET /board` (one static page, no patient data in it: it asks for a clinician's key and
reads the JSON endpoints below with it), `GET /beds` (every bed's newest values and open alarm, open alarms first,
filtered, sorted and paged), `GET /beds/<bed>/episodes/<start>/explain` and `GET /beds/<bed>/report`.

Why a static page polling JSON: no build step, no second server; the page is the API's first client, so what it
shows a clinician an integrator can read too, behind the same roles (docs/board.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from biostream.data.schema import ADVISORY
from biostream.models.conditions import LABELS
from biostream.serving.streaming.answers import episode_answer, iso
from biostream.serving.streaming.messages import query_params, time_text, whole_number

PAGE = Path(__file__).parent / "board.html"
BOARD_QUERY = {"q", "alarm", "state", "sort", "page", "size"}
ALARM_FILTERS = ("any", "open", "physiological", "technical", "advisory", "none")  # advisory: an open advisory
STATES = ("any", "recording", "stopped")  # recording: a bed sending data; stopped: closed for silence
SORTS = ("alarm", "bed", "recent")
MAX_PAGE_SIZE = 200
# what a technical alarm driven by a signal asks the nurse to check (a central station's "INOP" message)
CHECK = {"hr": "check the ECG leads", "spo2": "check the SpO2 probe (on the finger, not moving)",
         "sbp": "check the arterial line (flush, zero, transducer height) or the cuff",
         "dbp": "check the arterial line (flush, zero, transducer height) or the cuff",
         "map": "check the arterial line (flush, zero, transducer height) or the cuff",
         "rr": "check the respiration sensor", "etco2": "check the capnography line (kinked, disconnected, water)",
         "temp": "check the temperature probe"}
_RANK = {("physiological", False): 0, ("physiological", True): 1, ("technical", False): 2, ("technical", True): 3}


def what_to_check(signals: list[str]) -> str:
    """The technical condition in words: what to check, for the signals that drove it."""
    checks = list(dict.fromkeys(CHECK.get(s, f"check the {LABELS.get(s, s)} sensor") for s in signals))
    return "; ".join(checks) or "check the monitor's sensors"


def page() -> bytes:
    return PAGE.read_bytes()


def _csp() -> str:
    """The page's Content-Security-Policy: its own inline script (by its hash) and nothing else runs; it reads
    only this service; nothing frames it."""
    import base64
    import hashlib
    import re

    script = re.search(r"<script>(.*?)</script>", PAGE.read_text(encoding="utf-8"), re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src data: blob:; "
            f"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


CSP = _csp()


def board_query(query: str) -> dict[str, Any]:
    """`GET /beds`' query (ValueError naming a bad one)."""
    q = query_params(query, BOARD_QUERY, "GET /beds")
    alarm, sort, state = q.get("alarm", "any"), q.get("sort", "alarm"), q.get("state", "any")
    if alarm not in ALARM_FILTERS:
        raise ValueError(f"alarm is {alarm[:40]!r}: ask for one of {', '.join(ALARM_FILTERS)}")
    if state not in STATES:
        raise ValueError(f"state is {state[:40]!r}: ask for one of {', '.join(STATES)}")
    if sort not in SORTS:
        raise ValueError(f"sort is {sort[:40]!r}: ask for one of {', '.join(SORTS)}")
    text = q.get("q", "")
    if len(text) > 128:
        raise ValueError(f"q is {len(text)} characters: a bed id (or part of one) is at most 128")
    return {"q": text, "alarm": alarm, "state": state, "sort": sort,
            "page": whole_number(q.get("page", "1"), "page", 1, 10 ** 6, "pages"),
            "size": whole_number(q.get("size", "50"), "size", 1, MAX_PAGE_SIZE, "beds per page")}


def board(store: Any, scorer: Any, query: dict[str, Any], now: float | None = None,
          monitoring: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every bed (filtered by `q`, a part of its id, `alarm`, and `state`: recording, or stopped (closed for
    silence; one with an open alarm is always shown)), sorted (`alarm`: open physiological alarms not yet
    acknowledged first, then acknowledged ones, then technical, each longest-open first, then the beds with an open
    advisory only; `bed`; `recent`), one page of them with its newest values and its open alarm and advisory (each
    counted apart); each signal with the bedside limits of the floor's rules on it."""
    now = time.time() if now is None else now
    beds = store.board_rows()
    alarms: dict[str, dict[str, Any]] = {}
    advisories: dict[str, dict[str, Any]] = {}  # a bed's oldest open advisory: yellow, never an alarm
    for e in store.episodes(open_only=True, limit=10 ** 6):  # one per bed: its physiological one if it has both
        if e["alarm_class"] == ADVISORY:
            advisories.setdefault(e["bed"], e)
            continue
        have = alarms.get(e["bed"])
        if have is None or _RANK[(e["alarm_class"], e["acked_at"] is not None)] < _RANK[
                (have["alarm_class"], have["acked_at"] is not None)]:
            alarms[e["bed"]] = e
    counts = {"beds": len(beds), "physiological": 0, "technical": 0, "unacknowledged": 0,
              "advisory": len(advisories)}
    for e in alarms.values():
        counts[e["alarm_class"]] += 1
        counts["unacknowledged"] += e["acked_at"] is None
    text, which, state = query["q"].lower(), query["alarm"], query.get("state", "any")
    rows = [b for b in beds if text in b[0].lower()
            and (which == "any" or (which == "open" and b[0] in alarms) or (which == "none" and b[0] not in alarms)
                 or (which == ADVISORY and b[0] in advisories)
                 or (b[0] in alarms and alarms[b[0]]["alarm_class"] == which))
            and (state == "any" or b[0] in alarms or (b[1] is not None) == (state == "recording"))]
    if query["sort"] == "bed":
        rows.sort(key=lambda b: b[0])
    elif query["sort"] == "recent":
        rows.sort(key=lambda b: (-(b[1] or 0), b[0]))
    else:
        rows.sort(key=lambda b: (_RANK[(alarms[b[0]]["alarm_class"], alarms[b[0]]["acked_at"] is not None)],
                                 alarms[b[0]]["start"], b[0]) if b[0] in alarms else
                  (8, advisories[b[0]]["start"], b[0]) if b[0] in advisories else (9, 0, b[0]))
    size, number = query["size"], query["page"]
    shown = rows[(number - 1) * size: number * size]
    newest = store.newest_rows([(b[0], b[1]) for b in shown if b[1] is not None])
    signals = scorer.spec.signals
    limits = bedside_limits(scorer)
    tiles = []
    for bed, last_second, _arrival in shown:
        row = newest.get(bed)
        vals = None if row is None else np.frombuffer(row["vals"], dtype=np.float64)
        alarm = alarms.get(bed)
        tile: dict[str, Any] = {
            "bed": bed, "recording": last_second is not None,
            "last_time": None if last_second is None else iso(last_second),
            "vitals": {s: (None if vals is None or np.isnan(v) else float(v))
                       for s, v in zip(signals, vals if vals is not None else [np.nan] * len(signals), strict=True)},
            "score": None if row is None else float(row["score"]), "alarm": None, "advisory": None}
        if alarm is not None:
            ep = episode_answer(alarm)
            ep["open_for_s"] = max(0, int(now - alarm["opened_at"]))
            ep["check"] = (alarm.get("reason") or what_to_check(ep["signals"])
                           if alarm["alarm_class"] == "technical" else None)
            tile["alarm"] = ep
        if bed in advisories:
            tile["advisory"] = {**episode_answer(advisories[bed]),
                                "open_for_s": max(0, int(now - advisories[bed]["opened_at"]))}
        tiles.append(tile)
    return {"beds": tiles, "total": len(rows), "page": number, "size": size, "pages": max(1, -(-len(rows) // size)),
            "counts": counts, "threshold": scorer.threshold, "model": scorer.model.model_dump(),
            "signals": [{"name": s, "label": LABELS.get(s, s), "unit": scorer.spec.units[s],
                         "limits": limits.get(s, [])} for s in signals],
            "monitoring": monitoring, "now": iso(int(now))}


def bedside_limits(scorer: Any) -> dict[str, list[dict[str, Any]]]:
    """Per signal, the limits of the floor's bedside rules on it (what the board draws on its charts)."""
    rules = scorer.bundle.combination.rules
    out: dict[str, list[dict[str, Any]]] = {}
    for r in [] if rules is None else rules.rules:
        out.setdefault(r["signal"], []).append({"kind": r["kind"], "op": r["op"], "threshold": float(r["threshold"])})
    return out


def report_query(query: str) -> dict[str, Any]:
    q = query_params(query, {"since", "until", "format"}, "GET /beds/<bed>/report")
    fmt = q.get("format", "html")
    from biostream.reporting.case import FORMATS

    if fmt not in FORMATS:
        raise ValueError(f"format is {fmt[:20]!r}: ask for one of {', '.join(FORMATS)}")
    return {"format": fmt, "since": None if "since" not in q else time_text(q["since"], "since"),
            "until": None if "until" not in q else time_text(q["until"], "until")}


MAX_REPORT_S = 7 * 86400


def report_period(store: Any, bed: str, since: int | None, until: int | None) -> tuple[int, int] | str:
    """The period a report covers: as asked, else the bed's own recording within the last 24 h before `until` (its
    newest stored second by default): from its oldest stored second there, so that an 8-min recording gets an 8-min
    report; or why there is none (a 404: the bed has no recording). ValueError for a period that is empty or longer
    than 7 days (a 400)."""
    if until is None:
        newest = store.newest_seconds([bed]).get(bed)
        if newest is None:
            return (f"bed {bed!r} has no stored second: a report needs a recording (or ask for a period with since "
                    f"and until)")
        until = newest + 1
    if since is None:
        first = store.first_second(bed, until - 86400)
        since = until - 86400 if first is None or first >= until else first
    if until <= since:
        raise ValueError(f"until ({iso(until)}) is not after since ({iso(since)}): ask for a period")
    if until - since > MAX_REPORT_S:
        raise ValueError(f"the period is {(until - since) / 86400:.1f} days: a report covers at most 7; ask for less")
    return since, until


def explain_answer(store: Any, scorer: Any, bed: str, start: int) -> dict[str, Any] | str | None:
    """The explanation of the window that opened the bed's episode at `start` (None: no such episode; a text: why
    there is nothing to explain)."""
    from biostream.reporting.explain import explain_episode

    episode = next((e for e in store.episodes(bed, since=start - 1, limit=10 ** 6)
                    if e["start"] == start and not e.get("kind")), None)  # an alarm's (an advisory says its reason)
    if episode is None:
        return None
    if episode.get("reason"):  # a condition not read from the signals (its data refused): no window to explain
        return (f"bed {bed!r}'s episode at {iso(start)} is the condition '{episode['reason']}', not read from its "
                f"signals")
    return {"bed": bed, "episode": episode_answer(episode), **explain_episode(store, scorer, bed, start)}
