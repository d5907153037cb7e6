"""Advisories (`biostream.models.advisory`) and their forward evaluation (`biostream.models.forward`): the
definitions on a recording built by hand, each baseline against a direct computation, causality (what a bed's
stream will need), and the table on the project's real recordings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.models.advisory import advisories, candidate_scores, extrapolated, personal_limit, window_scores
from biostream.models.candidates import Advisories, Raised
from biostream.models.forward import judge, onsets
from biostream.reporting.advisory import advisory_metrics, judge_candidates, table
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def config(configs) -> Advisories:
    return Advisories.load(ROOT / "configs/advisories.yaml", configs.rules)


def one_patient(map_values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": "p", "time_s": np.arange(len(map_values)), "map": map_values})


def test_warned_lead_new_onset_false_and_time_on_a_recording_built_by_hand(configs, config):
    """MAP 80, 70 from 1,000 s, two hypotensions (60 at 1,300-1,400 and 1,500-1,600: the second is no new onset, and
    its advisory merges with the first's across 100 s), then a dip to 71 at 3,000-3,100 that no event follows."""
    m = np.full(4000, 80.0)
    m[1000:1300] = 70
    m[1300:1400] = 60
    m[1500:1600] = 60
    m[3000:3100] = 71
    frame = one_patient(m)
    events = pd.DataFrame({"patient_id": "p", "kind": "hypotension", "start_s": [1300, 1500], "end_s": [1400, 1600]})
    cand = Raised(name="map_below_73", type="raised", source="test", limits={"hypotension": 73.0})
    advised = advisories(candidate_scores(cand, configs.rules, frame), frame, config.episodes.policy)
    assert advised.episodes[["start_s", "end_s"]].values.tolist() == [[1000, 1600], [3000, 3100]]
    j = judge(advised, frame, events, configs.rules, config.evaluation)
    s = j.summary("hypotension")
    assert (s["events"], s["warned"], s["new_onset"], s["new_onset_warned"]) == (2, 2, 1, 1)
    assert j.leads["lead_s"].tolist() == [300.0, 500.0] and s["median_lead_s"] == 400.0
    hours = 4000 / 3600
    assert s["advisory_episodes_per_hour"] == pytest.approx(2 / hours)
    assert s["false_per_hour"] == pytest.approx(1 / hours) and s["ppv"] == 0.5
    assert s["time_under_advisory"] == pytest.approx(700 / 4000)
    # a warning that starts less than lead_s before the onset does not count
    late = m.copy()
    late[1000:1250] = 80
    advised = advisories(candidate_scores(cand, configs.rules, one_patient(late)), one_patient(late),
                         config.episodes.policy)
    assert judge(advised, one_patient(late), events, configs.rules, config.evaluation).summary()["warned"] == 1
    # the early-warning AUROC: 70 mmHg before the onset ranks above 80 elsewhere
    assert j.auroc["hypotension@300s"] > 0.5


def test_new_onset_counts_the_gap_since_the_previous_event_of_the_kind():
    ev = pd.DataFrame({"patient_id": ["a", "a", "a", "b"], "kind": ["hypotension", "hypotension", "desaturation",
                                                                     "hypotension"],
                       "start_s": [0, 1000, 1100, 5000], "end_s": [100, 1100, 1200, 5060]})
    o = onsets(ev, 1800).set_index(["patient_id", "kind", "onset_s"])["new_onset"]
    assert o.loc[("a", "hypotension", 0)] and not o.loc[("a", "hypotension", 1000)]
    assert o.loc[("a", "desaturation", 1100)] and o.loc[("b", "hypotension", 5000)]


def test_extrapolation_is_the_least_squares_line_over_the_last_values():
    rng = np.random.default_rng(0)
    y = 80 - 0.02 * np.arange(3000) + rng.normal(0, 2, 3000)
    y[rng.random(3000) < 0.2] = np.nan
    breaks = np.zeros(3000, dtype=bool)
    breaks[[0, 1700]] = True  # a second stretch: the line never reaches back across it
    got = extrapolated(y, breaks, 600, 300, 0.5)
    for t in (650, 1699, 2400, 2999):
        lo = max(t - 599, 1700 if t >= 1700 else 0)
        x = np.arange(lo, t + 1)
        ok = np.isfinite(y[lo:t + 1])
        slope, icpt = np.polyfit(x[ok], y[lo:t + 1][ok], 1)
        assert got[t] == pytest.approx(slope * (t + 300) + icpt, rel=1e-9)
    assert np.isnan(got[1700 + 250])  # fewer than half of 600 s seen in the new stretch


def test_personal_limit_is_the_median_minus_k_iqr_once_seen(configs, config):
    rule = next(r for r in configs.rules if r.kind == "hypotension")
    cand = config.candidate("personalised")
    rng = np.random.default_rng(1)
    y = 75 + rng.normal(0, 6, 5000)
    got = personal_limit(y, np.r_[True, np.zeros(4999, dtype=bool)], rule, cand)
    assert np.isnan(got[: cand.min_seen_s - 1]).all()
    for t in (cand.min_seen_s - 1, 4000):
        w = y[t - cand.history_s + 1: t + 1]
        q1, med, q3 = np.quantile(w, [0.25, 0.5, 0.75])
        assert got[t] == pytest.approx(med - cand.k * max(q3 - q1, rule.unit))


def test_the_gated_limit_warns_while_map_falls_or_after_a_hypotension_and_leaves_the_alarms_time_alone(configs, config):
    """MAP < 73 gated (map_falling_below_73): flat at 70 it says nothing the value does not; falling to 66 it warns;
    while MAP < 65 holds for the rule's minute it is off (the alarm's time); below 73 within 30 min after it warns
    again (a recurrence), and not once 30 min have passed with MAP flat at 70."""
    rule = next(r for r in configs.rules if r.kind == "hypotension")
    cand = config.candidate("map_falling_below_73")
    m = np.full(9000, 70.0)                             # 0-1,999: flat at 70 (below 73, not falling)
    m[2000:2600] = np.linspace(70, 66, 600)             # 2,000-2,599: falling 4 mmHg in 10 min
    m[2600:2800] = 60                                   # 2,600-2,799: a hypotension (the rule holds from 2,659)
    m[2800:] = 70                                       # then flat at 70: within 30 min of it, then not
    score = candidate_scores(cand, configs.rules, one_patient(m))["hypotension"]
    on = score > 0
    assert not on[:2000].any()                          # flat: MAP < 73 alone is no warning here
    first = int(np.argmax(on[2000:])) + 2000
    assert 2000 < first < 2300 and on[first:2600].all()  # the 10-min line falls >= 1 mmHg soon after 2,000
    assert on[2600:2600 + rule.min_duration_s - 1].all()  # MAP < 65 not yet held for the rule's minute: still "soon"
    assert not on[2600 + rule.min_duration_s - 1:2800].any()  # the rule holds: the alarm's time, not the advisory's
    assert on[2800:2799 + cand.recent_s].all()          # below 65 within the last 30 min: a recurrence is likely
    assert not on[2800 + cand.recent_s:].any()          # 30 min after, flat at 70: off again
    assert (score[~on] < 0).all() and np.isfinite(score).all()
    # the same on the windows a bed's stream sends (the last second of each, from its own 1,800 s)
    ends = np.arange(1799, 9000, 37)
    x = np.stack([m[e - 1799:e + 1] for e in ends])
    np.testing.assert_allclose(window_scores(cand, configs.rules, {"map": x})["hypotension"], score[ends], atol=1e-9)


def test_every_candidate_is_causal_what_a_bed_stream_can_compute(configs, config, real):
    """A second's score depends on it and the seconds before only: cutting the recording there changes nothing."""
    frame = real.vitals[real.vitals["patient_id"] == "real-mimic3_p000020_numerics_1perMin"].reset_index(drop=True)
    cut = 40_000
    for c in config.candidates:
        whole, head = (candidate_scores(c, configs.rules, f) for f in (frame, frame.iloc[:cut]))
        for kind in whole:
            np.testing.assert_array_equal(whole[kind][:cut], head[kind], err_msg=f"{c.name} {kind}")


def test_the_advisory_table_on_the_real_recordings(configs, config, real):
    """Every baseline judged forward on the 29 real recordings (58.8 h): the figures docs/advisories.md reports."""
    judged = judge_candidates(config, configs.rules, real.vitals, real.alarm_events)
    m = advisory_metrics(config, judged)
    assert m["patients"] == 29 and m["hours"] == pytest.approx(58.8, abs=0.05)
    hyp = {n: c["by_kind"]["hypotension"] for n, c in m["candidates"].items()}
    n_hyp = int((real.alarm_events["kind"] == "hypotension").sum())
    assert {h["events"] for h in hyp.values()} == {n_hyp} == {42}
    assert {c["all"]["events"] for c in m["candidates"].values()} == {len(real.alarm_events)}
    # MAP < 73 warns whatever the current MAP's own limit warns, and more
    assert hyp["map_below_73"]["warned"] >= hyp["current"]["warned"]
    figures = {n: (h["warned"], h["new_onset_warned"], h["new_onset"]) for n, h in hyp.items()}
    assert figures["map_below_73"] == (26, 6, 10) and figures["map_extrapolated"] == (14, 4, 10)
    assert figures["map_falling_below_73"] == (25, 6, 10)
    # the reference: the most new-onset events warned within 0.3 false advisory episodes an hour and 10% of the time
    assert m["reference"] == "map_falling_below_73"
    gated, below = m["candidates"]["map_falling_below_73"]["all"], m["candidates"]["map_below_73"]["all"]
    assert gated["false_per_hour"] <= 0.3 and gated["time_under_advisory"] <= 0.1
    assert below["false_per_hour"] > 0.3 and below["time_under_advisory"] > 0.1
    lo, mid, hi = m["candidates"]["map_below_73"]["vs_reference_hypotension"]["warned_share"]
    assert lo <= mid <= hi and mid > 0
    text = table("real", m, "hypotension", 300)
    assert "map_below_73 | 26/71 | 6/20 | 26/42 | 6/10" in text


def _cand(kind: str, new: int, false_h: float, ci: list[float] | None = None) -> dict:
    return {"type": kind, "all": {"new_onset_warned": new, "new_onset": 10, "warned": new, "events": 40,
                                  "false_per_hour": false_h, "time_under_advisory": 0.05},
            "vs_reference": None if ci is None else {"new_onset_warned_share": ci}}


def test_a_learned_advisory_serves_only_where_it_beats_the_best_baseline_beyond_chance():
    from biostream.models.forward import choose_advisory

    metrics = {"reference": "map_extrapolated", "candidates": {
        "map_extrapolated": _cand("extrapolated", 4, 0.19),
        "map_below_73": _cand("raised", 6, 0.32, [0.0, 0.1, 0.2]),
        "iforest": _cand("learned", 7, 0.25, [-0.1, 0.3, 0.5]),  # more, but the interval includes 0
        "ocsvm": _cand("learned", 9, 0.45, [0.1, 0.5, 0.7]),  # over the budget
        "lstm_ae": _cand("learned", 3, 0.1, [-0.3, -0.1, 0.0]),  # fewer
    }}
    chosen = choose_advisory("real", metrics, {"false_per_hour": 0.3, "time_under_advisory": 0.1})
    assert chosen["source"] == "map_extrapolated" and chosen["type"] == "extrapolated"
    # the rates the service's monitoring compares the live advisory with: the chosen source's
    assert chosen["rates"] == {"advisory_episodes_per_hour": None, "false_per_hour": 0.19,
                               "time_under_advisory": 0.05} == chosen["baseline_rates"]
    why = chosen["why"]
    assert why.startswith("no learned model beats the best baseline on real")
    for part in ("iforest's bootstrap interval", "ocsvm is over the budget", "lstm_ae warns no more new-onset"):
        assert part in why, part
    metrics["candidates"]["iforest"] = _cand("learned", 8, 0.2, [0.05, 0.4, 0.6])
    chosen = choose_advisory("real", metrics, {"false_per_hour": 0.3, "time_under_advisory": 0.1})
    assert chosen["source"] == "iforest" and chosen["type"] == "learned" and "+0.05 to +0.60" in chosen["why"]
    assert chosen["rates"]["false_per_hour"] == 0.2 and chosen["baseline_rates"]["false_per_hour"] == 0.19
    # the service serves a learned choice by its baseline, with the baseline's rate (tracking.package)
    from biostream.core.config import Configs
    from biostream.models.candidates import Advisories
    from biostream.tracking.package import served_advisor

    configs = Configs.load(ROOT / "configs/signals.yaml", ROOT / "configs/alarms.yaml")
    config = Advisories.load(ROOT / "configs/advisories.yaml", configs.rules)
    chosen["baseline_rates"]["advisory_episodes_per_hour"] = 0.61
    served = served_advisor(chosen, config, configs.rules, configs.signals, configs.signals.keys)
    assert served.name == "map_extrapolated" and served.episodes_per_hour == 0.61
    assert served.describe()["episodes_per_hour"] == 0.61 and "its baseline map_extrapolated" in served.why


def test_what_comes_before_a_real_hypotension_is_measured_for_the_synthetic_world_to_match(configs, config, real):
    from biostream.models.forward import precursors

    rule = next(r for r in configs.rules if r.kind == "hypotension")
    p = precursors(real.vitals, real.alarm_events, rule, config.evaluation)
    assert (p["onsets"], p["new_onset"]) == (42, 10)
    # by hand: the MAP 5 min before each onset, and how many were still >= 75 then
    values = real.vitals.set_index(["patient_id", "time_s"])["map"]
    hyp = real.alarm_events[real.alarm_events["kind"] == "hypotension"]
    at = values.reindex(pd.MultiIndex.from_arrays([hyp["patient_id"], hyp["start_s"] - 300])).to_numpy()
    seen = np.isfinite(at)
    assert p["without_warning"] == pytest.approx((at[seen] > 75).sum() / seen.sum())
    assert p["median_before"]["-300s"] == pytest.approx(np.median(at[seen]))
    assert 0 < p["new_onset_without_warning"] < 1


def test_a_wrong_advisory_config_is_named(configs, tmp_path):
    import yaml

    from biostream.core.config import ConfigError

    good = yaml.safe_load((ROOT / "configs/advisories.yaml").read_text())
    for change, named in ((lambda d: d["candidates"][1].update(limitz=1), "limitz"),
                          (lambda d: d["candidates"][1]["limits"].update(hypotensoin=70), "hypotensoin"),
                          (lambda d: d["candidates"].append(dict(d["candidates"][0])), "repeat"),
                          (lambda d: d["evaluation"].update(time_under_advisory=2), "time_under_advisory"),
                          (lambda d: next(c for c in d["candidates"] if c["type"] == "gated")["towards"].update(
                              desaturation=1), "towards")):
        bad = yaml.safe_load(yaml.safe_dump(good))
        change(bad)
        path = tmp_path / "advisories.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=named):
            Advisories.load(path, configs.rules)
