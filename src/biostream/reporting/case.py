"""A case report: one bed's period (from the stream store) or one scored recording as one document: the timeline
(signals, score, alarm episodes shaded by class, the bedside limits), the episodes with their explanations, time
beyond each bedside limit, the model and its floor, and a plain-text summary written from a template (every number
in it is one of the report's). HTML (`html`), PDF (`pdf`, fpdf2) and text (`Case.summary`); docs/serving.md."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from biostream.data.schema import ADVISORY, PHYSIOLOGICAL, TECHNICAL
from biostream.models.conditions import LABELS

# a central station's red; cyan for "INOP"; yellow for an advisory (IEC 60601-1-8's lower priority)
CLASS_COLOURS = {PHYSIOLOGICAL: "#d62728", TECHNICAL: "#17becf", ADVISORY: "#e6b800"}
FORMATS = {"html": "text/html; charset=utf-8", "pdf": "application/pdf", "text": "text/plain; charset=utf-8"}


def when(second: int | float) -> str:
    """A second as the report writes it: UTC, to the second."""
    return datetime.fromtimestamp(int(second), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Limit:
    """A bedside rule of the model's floor: `signal op threshold` held for `min_duration_s` raises an alarm."""

    kind: str
    signal: str
    op: str
    threshold: float
    min_duration_s: int

    def label(self, units: dict[str, str]) -> str:
        name = LABELS.get(self.signal, self.signal)
        return f"{name} {self.op} {self.threshold:g} {units.get(self.signal, '')}".strip()

    def beyond(self, values: np.ndarray) -> np.ndarray:
        """Per value, whether it is beyond the limit (a missing value is not)."""
        with np.errstate(invalid="ignore"):
            return values < self.threshold if self.op == "<" else values > self.threshold


def _second(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp())


@dataclass(frozen=True)
class CaseEpisode:
    """An episode as the report draws and lists it, in seconds: made only from the service's one episode form
    (`biostream.serving.schemas.Episode`, a stream's `StreamEpisode`) by `of`."""

    start: int
    end: int | None  # exclusive; None while open
    last_on: int
    alarm_class: str
    peak_second: int | None
    peak_score: float | None
    signals: list[str]
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    model_version: str | None = None
    explanation: dict[str, Any] | None = None  # `/explain` of the window that opened it: method, top signals, ...
    reason: str | None = None  # a technical condition not read from the signals ("no valid data from this bed: ..."),
    # or what turned an advisory on ("MAP falling: ...")

    @property
    def duration_s(self) -> int:
        return (self.end if self.end is not None else self.last_on + 1) - self.start

    @classmethod
    def of(cls, e: Any, last_on: int | None = None, explanation: dict[str, Any] | None = None,
           model_version: str | None = None) -> CaseEpisode:
        """The report's form of an API episode `e` (an Episode or StreamEpisode); `last_on`: an open episode's last
        second on (the store's), `model_version`: where `e` does not carry one (a recording's)."""
        end = _second(e.end)
        reason = e.reason if e.source is None or e.reason is None else f"{e.reason} ({e.source})"
        return cls(_second(e.start), end, end - 1 if last_on is None else last_on, e.alarm_class,
                   _second(e.peak_time), e.peak_score, list(e.signals), getattr(e, "acknowledged_by", None),
                   _second(getattr(e, "acknowledged_at", None)), getattr(e, "model_version", None) or model_version,
                   explanation, reason)


@dataclass
class Case:
    """What a report shows; every number of the documents is computed here (tests compare them with the store)."""

    subject: str  # the bed's id, or the recording's name
    kind: str  # "bed" or "recording"
    since: int  # the period [since, until), seconds since the epoch
    until: int
    signals: tuple[str, ...]
    units: dict[str, str]
    times: np.ndarray  # (n,) the recorded (stored) seconds of the period, ascending
    values: np.ndarray  # (n, S), NaN = missing
    scores: np.ndarray  # (n,)
    threshold: float
    episodes: list[CaseEpisode]
    limits: list[Limit]
    model: dict[str, Any]  # name, version, alias, uri, detector
    safety: dict[str, Any]  # `metadata`'s safety: the floor's rules, technical checks, whether the model adds alarms
    generated_at: float = field(default_factory=lambda: datetime.now(UTC).timestamp())

    @property
    def recorded_s(self) -> int:
        return len(self.times)

    def under_limits(self) -> list[dict[str, Any]]:
        """Per bedside limit: seconds (and minutes) of the period beyond it, of the seconds its signal was read."""
        out = []
        for lim in self.limits:
            j = self.signals.index(lim.signal)
            col = self.values[:, j] if len(self.values) else np.empty(0)
            beyond = lim.beyond(col)
            read = int(np.count_nonzero(~np.isnan(col)))
            out.append({"limit": lim.label(self.units), "kind": lim.kind, "signal": lim.signal,
                        "seconds": int(np.count_nonzero(beyond)), "minutes": round(np.count_nonzero(beyond) / 60, 1),
                        "read_s": read, "longest_s": _longest_run(beyond)})
        return out

    def missing(self) -> dict[str, float]:
        """Per signal, the fraction of the recorded seconds without a value."""
        if not len(self.values):
            return {s: 1.0 for s in self.signals}
        return {s: round(float(np.isnan(self.values[:, j]).mean()), 3) for j, s in enumerate(self.signals)}

    def counts(self) -> dict[str, int]:
        return {c: sum(e.alarm_class == c for e in self.episodes) for c in (PHYSIOLOGICAL, TECHNICAL, ADVISORY)}

    def summary(self) -> str:
        """The plain-text summary, from a template: each number is one the report computed."""
        hours = (self.until - self.since) / 3600
        counts = self.counts()
        what = "bed" if self.kind == "bed" else "recording"
        lines = [f"Case report: {what} {self.subject}, {when(self.since)} to {when(self.until)} ({hours:.1f} h; "
                 f"{self.recorded_s} seconds recorded)."]
        alarms = counts[PHYSIOLOGICAL] + counts[TECHNICAL]
        lines.append(f"Alarm episodes: {counts[PHYSIOLOGICAL]} physiological, {counts[TECHNICAL]} technical"
                     + (f" ({alarms / hours:.1f} per hour)." if hours > 0 else "."))
        if counts[ADVISORY]:
            lines.append(f"Advisory episodes (a warning that an event is likely soon, never an alarm): "
                         f"{counts[ADVISORY]}" + (f" ({counts[ADVISORY] / hours:.1f} per hour)." if hours > 0 else "."))
        for e in self.episodes:
            noun = "advisory" if e.alarm_class == ADVISORY else "condition" if e.reason else "alarm"
            lines.append(f"- {e.alarm_class if noun != 'advisory' else 'yellow'} {noun} from {when(e.start)} for "
                         f"{e.duration_s} s" + (f": {e.reason}" if e.reason else "")
                         + (f", driven by {', '.join(e.signals)}" if e.signals else "")
                         + (f"; acknowledged by {e.acknowledged_by}" if e.acknowledged_by else "; not acknowledged")
                         + ".")
        beyond = [u for u in self.under_limits() if u["seconds"]]
        if beyond:
            lines.append("Time beyond the bedside limits: " + "; ".join(
                f"{u['limit']} for {u['minutes']:.1f} min (longest stretch {u['longest_s']} s)" for u in beyond) + ".")
        else:
            lines.append("No recorded second was beyond a bedside limit.")
        absent = [f"{LABELS.get(s, s)} {100 * f:.0f}%" for s, f in self.missing().items() if f > 0]
        if absent:
            lines.append("Seconds without a value: " + ", ".join(absent) + " (technical conditions, not patient "
                                                                            "events).")
        m = self.model
        lines.append(f"Scored by {m.get('name')} version {m.get('version')} ({m.get('detector')}), alarm threshold "
                     f"{self.threshold:g}; its floor: {len(self.safety.get('floor', []))} bedside rules that alarm "
                     f"through it. {self.safety.get('note', '')}".rstrip())
        return "\n".join(lines) + "\n"


def _longest_run(flags: np.ndarray) -> int:
    """The longest run of True (0 for none)."""
    if not flags.any():
        return 0
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


# ---------------------------------------------------------------------------------------------- making a case
def limits_of(bundle: Any) -> list[Limit]:
    rules = bundle.combination.rules
    return [] if rules is None else [Limit(r["kind"], r["signal"], r["op"], float(r["threshold"]),
                                           int(r["min_duration_s"])) for r in rules.rules]


def case_of_recording(scorer: Any, values: np.ndarray, start: datetime, name: str) -> Case:
    """A recording's case: (S, T) values from `start`, scored as `score_series` scores it."""
    from types import SimpleNamespace

    from biostream.features.windows import recording_windows

    result = scorer.score_series(SimpleNamespace(array=values, start=start, patient_id=name))
    t0 = int(start.timestamp())
    episodes = []
    for e in result.episodes:
        window = recording_windows(values.T, scorer.spec.window_s, np.array([_second(e.start) - t0]))[0]
        answer = scorer.explain(SimpleNamespace(array=window, patient_id=name, time=e.start))
        episodes.append(CaseEpisode.of(e, model_version=scorer.spec.model_version, explanation=_explanation(answer)))
    # the served advisory's episodes, with what turned each on
    episodes += [CaseEpisode.of(a, model_version=scorer.spec.model_version) for a in result.advisories]
    episodes.sort(key=lambda e: e.start)
    times = t0 + np.arange(values.shape[1], dtype=np.int64)
    recorded = ~np.isnan(values).all(axis=0)
    return make_case(name, "recording", t0, t0 + values.shape[1], scorer, times[recorded], values.T[recorded],
                 np.asarray(result.scores)[recorded], episodes)


def make_case(subject: str, kind: str, since: int, until: int, scorer: Any, times: np.ndarray, values: np.ndarray,
          scores: np.ndarray, episodes: list[CaseEpisode]) -> Case:
    spec = scorer.spec
    meta = scorer.metadata()
    model = {"name": spec.model_name, "version": spec.model_version, "alias": spec.model_alias,
             "uri": spec.model_uri, "detector": spec.detector}
    return Case(subject, kind, int(since), int(until), tuple(spec.signals), dict(spec.units), times, values, scores,
                float(scorer.threshold), episodes, limits_of(scorer.bundle), model, dict(meta.safety))


def _explanation(answer: Any) -> dict[str, Any]:
    return {"driver": answer.driver, "method": answer.method, "top_signals": list(answer.top_signals),
            "signals": dict(answer.signals), "score": answer.score}


# ---------------------------------------------------------------------------------------------- documents
def timeline(case: Case) -> bytes:
    """The timeline as a PNG: each signal and the score over the period, the episodes shaded by class, the
    bedside limits and the alarm threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*case.signals, "score"]
    fig, axes = plt.subplots(len(panels), 1, figsize=(14, 0.9 * len(panels) + 0.4), sharex=True)
    minutes = (case.times - case.since) / 60.0
    for ax, name in zip(axes, panels, strict=True):
        if name == "score":
            ax.plot(minutes, case.scores, lw=0.7, color="black")
            ax.axhline(case.threshold, ls="--", lw=0.8, color="grey")
            ax.set_ylabel("score", fontsize=8)
        else:
            j = case.signals.index(name)
            ax.plot(minutes, case.values[:, j], lw=0.7, color="black")
            for lim in case.limits:
                if lim.signal == name:
                    ax.axhline(lim.threshold, ls="--", lw=0.8, color=CLASS_COLOURS[PHYSIOLOGICAL], alpha=0.6)
            ax.set_ylabel(f"{LABELS.get(name, name)}\n({case.units.get(name, '')})", fontsize=8)
        ax.tick_params(labelsize=7)
        for e in case.episodes:
            end = e.end if e.end is not None else e.last_on + 1
            ax.axvspan((e.start - case.since) / 60, (end - case.since) / 60, color=CLASS_COLOURS[e.alarm_class],
                       alpha=0.25, lw=0)
    axes[0].set_xlim(0, (case.until - case.since) / 60)
    axes[-1].set_xlabel(f"minutes from {when(case.since)} (red: physiological alarm, cyan: technical, yellow: "
                        "advisory)", fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    plt.close(fig)
    return out.getvalue()


def episode_rows(case: Case) -> list[list[str]]:
    rows = []
    for e in case.episodes:
        ex = e.explanation or {}
        rows.append([when(e.start), f"{e.duration_s} s" + ("" if e.end is not None else " (open)"), e.alarm_class,
                     ", ".join(e.signals) or "-", "-" if e.peak_score is None else f"{e.peak_score:.3g}",
                     e.reason or ((f"{ex.get('driver')}: " + ", ".join(ex.get("top_signals") or [])) if ex else "-"),
                     e.acknowledged_by or "-", e.model_version or "not recorded"])
    return rows


EPISODE_HEADER = ["start", "duration", "class", "signals", "peak score", "explanation", "acknowledged by", "model"]
LIMIT_HEADER = ["bedside limit", "minutes beyond", "longest stretch (s)", "seconds read"]


def _limit_rows(case: Case) -> list[list[str]]:
    return [[u["limit"], f"{u['minutes']:.1f}", str(u["longest_s"]), str(u["read_s"])] for u in case.under_limits()]


def _model_lines(case: Case) -> list[str]:
    m, s = case.model, case.safety
    return [f"{m['name']} version {m['version']} ({m['alias']}, {m['detector']}), {m['uri']}",
            f"alarm threshold {case.threshold:g}; the model adds alarms of its own: "
            + ("yes" if s.get("model_alarms") else "no"),
            "floor (bedside rules that alarm through the model): " + ("; ".join(s.get("floor") or []) or "none"),
            str(s.get("note", ""))]


def html_report(case: Case) -> str:
    esc = html.escape
    png = base64.b64encode(timeline(case)).decode()

    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body or '<tr><td>none</td></tr>'}</tbody></table>"

    summary = "".join(f"<p>{esc(line)}</p>" for line in case.summary().splitlines() if not line.startswith("- "))
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Case report: {esc(case.subject)}"
            "</title><style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
            "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}"
            "th{background:#f3f3f3}img{max-width:100%}</style></head><body>"
            f"<h1>Case report: {esc(case.kind)} {esc(case.subject)}</h1>"
            f"<p>{esc(when(case.since))} to {esc(when(case.until))}; made {esc(when(case.generated_at))}</p>"
            f"<h2>Summary</h2>{summary}<h2>Timeline</h2><img alt='timeline' src='data:image/png;base64,{png}'>"
            f"<h2>Alarm episodes</h2>{table(EPISODE_HEADER, episode_rows(case))}"
            f"<h2>Time beyond the bedside limits</h2>{table(LIMIT_HEADER, _limit_rows(case))}"
            "<h2>Model and safety floor</h2>" + "".join(f"<p>{esc(line)}</p>" for line in _model_lines(case))
            + "</body></html>")


def pdf_report(case: Case) -> bytes:
    from fpdf import FPDF, FontFace

    def latin(text: str) -> str:  # the core fonts are Latin-1
        return text.encode("latin-1", "replace").decode("latin-1")

    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_auto_page_break(True, margin=12)
    pdf.set_title(latin(f"Case report: {case.subject}"))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, latin(f"Case report: {case.kind} {case.subject}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, latin(f"{when(case.since)} to {when(case.until)}; made {when(case.generated_at)}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for line in case.summary().splitlines():
        if not line.startswith("- "):
            pdf.multi_cell(0, 4.5, latin(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    room = pdf.h - pdf.b_margin - pdf.get_y()  # the timeline fills the rest of the first page
    pdf.image(io.BytesIO(timeline(case)), w=pdf.epw, h=max(room, 100), keep_aspect_ratio=True)
    for title, header, rows in (("Alarm episodes", EPISODE_HEADER, episode_rows(case)),
                                ("Time beyond the bedside limits", LIMIT_HEADER, _limit_rows(case))):
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 8)
        bold = FontFace(emphasis="BOLD", fill_color=(243, 243, 243))
        with pdf.table(headings_style=bold, line_height=4.5) as table:
            for r in [header, *(rows or [["none"] + [""] * (len(header) - 1)])]:
                row = table.row()
                for c in r:
                    row.cell(latin(c))
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 8, "Model and safety floor", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    for line in _model_lines(case):
        pdf.multi_cell(0, 4.5, latin(line), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def render(case: Case, fmt: str) -> bytes:
    """The document in `fmt` (`FORMATS`)."""
    if fmt == "html":
        return html_report(case).encode()
    if fmt == "pdf":
        return pdf_report(case)
    if fmt == "text":
        return case.summary().encode()
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
