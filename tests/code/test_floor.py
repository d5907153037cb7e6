"""The safety floor and the technical checks, on hand-made windows: the rules' score fires exactly when the rules
do, a floored detector alarms wherever the rules alarm, and artefacts make alarms technical, not patient events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import AlarmRule
from biostream.data.labels import label_recordings
from biostream.models.alarms import AlarmPolicy, apply_policy
from biostream.models.detectors.clinical import FLOOR, PENDING, ClinicalThresholdDetector
from biostream.models.floor import Combination, FloorView, combine, floor_view, learned_scale, outputs_of_windows
from biostream.models.technical import TechnicalChecks

SIGNALS = ("hr", "spo2", "sbp", "dbp", "map")
RULES = (
    {"kind": "hypotension", "signal": "map", "op": "<", "threshold": 65, "min_duration_s": 60, "unit": 5},
    {"kind": "tachycardia", "signal": "hr", "op": ">", "threshold": 120, "min_duration_s": 60, "unit": 10},
    {"kind": "desaturation", "signal": "spo2", "op": "<", "threshold": 90, "min_duration_s": 15, "unit": 2},
)


@pytest.fixture(scope="module")
def rules(root) -> ClinicalThresholdDetector:
    return ClinicalThresholdDetector(rules=RULES, signals=SIGNALS).fit(np.full((1, len(SIGNALS), 60), np.nan))


@pytest.fixture(scope="module")
def checks(root) -> TechnicalChecks:
    return TechnicalChecks.from_yaml(root / "configs/technical.yaml")


def window(length=300, **signals) -> np.ndarray:
    """One raw window (1, S, length) of steady values, overridden per signal by arrays (aligned to the end)."""
    base = {"hr": 70.0, "spo2": 98.0, "sbp": 120.0, "dbp": 70.0, "map": 86.0}
    out = np.array([np.full(length, base[s]) for s in SIGNALS])
    for s, v in signals.items():
        v = np.asarray(v, dtype=float)
        out[SIGNALS.index(s), -len(v):] = v
    return out[None]


def test_rules_score_ranks_as_the_bedside_sees_it(rules):
    sustained = rules.rule_scores(window(map=np.full(60, 55.0)))[0, 0]
    pending = rules.rule_scores(window(map=np.full(30, 55.0)))[0, 0]
    near = rules.rule_scores(window(map=np.full(60, 66.0)))[0, 0]
    far = rules.rule_scores(window(map=np.full(60, 86.0)))[0, 0]
    missing = rules.rule_scores(window(map=np.full(60, np.nan)))[0, 0]
    assert sustained == pytest.approx(2.0)  # 10 mmHg under 65 in units of 5, at its weakest
    assert -PENDING < pending < 0 and pending == pytest.approx(-PENDING * 0.5)
    assert near == pytest.approx(-PENDING - 0.2) and far == pytest.approx(-PENDING - 4.2)
    assert sustained > 0 > pending > near > far > missing == FLOOR
    assert rules.decision_function(window(map=np.full(60, 55.0)))[0] == pytest.approx(2.0)


def test_rules_score_is_above_zero_exactly_when_the_rules_fire(rules):
    """On random pressures crossing the limit, the score of the window ending at each second is > 0 exactly when
    the hypotension rule has held for its minute up to that second (labelled from its start by `label_recordings`)."""
    rng = np.random.default_rng(1)
    n = 4000
    m = 70 + np.cumsum(rng.normal(0, 1.2, n))
    m = np.clip(m, 40, 100)
    m[rng.random(n) < 0.002] = np.nan
    recording = pd.DataFrame({"patient_id": "p", "time_s": np.arange(n), "map": m})
    lab = label_recordings(recording, [AlarmRule("hypotension", "map", "<", 65, 60, "t", 5, 3)], 30)
    on = np.zeros(n, dtype=bool)
    for ev in lab.alarm_events.itertuples():  # the rule fires from the 60th second of a run to its end
        on[ev.start_s + 59 : ev.end_s] = True
    padded = np.r_[np.full(59, np.nan), m]
    wins = np.stack([padded[t : t + 60] for t in range(n)])
    X = np.full((n, len(SIGNALS), 60), 70.0)
    X[:, SIGNALS.index("map")] = wins
    scores = rules.rule_scores(X)[:, 0]
    assert on.sum() > 200 and ((scores > 0) == on).all()


def test_a_floored_detector_alarms_wherever_the_rules_alarm(rules):
    """Whatever the learned scores, the combined score is at least the rules' score: with the same alarm policy
    a floored detector's alarms cover every second the rules alarm, from the same second or earlier."""
    rng = np.random.default_rng(2)
    n = 5000
    rule_scores = np.where(rng.random(n) < 0.05, rng.uniform(0, 3, n), rng.uniform(-4, 0, n))
    rule_scores = np.repeat(rule_scores[::25], 25)[:n]  # runs of 25 s
    learned = rng.normal(0, 1, n)
    comb = Combination(1.3, 1.0, rules, None, {})
    view = FloorView(np.c_[rule_scores, np.full(n, -5.0), np.full(n, -5.0)], None)
    policy = AlarmPolicy(k=3, n=5, refractory_s=120, tolerance_s=30)
    pid, t = np.zeros(n), np.arange(n)
    by_rules = apply_policy(pid, t, rule_scores, 0.0, policy)
    for threshold in (0.5, 2.0, np.inf):
        out = combine(learned, threshold, comb, view, SIGNALS)
        assert (out.score >= rule_scores).all()
        floored = apply_policy(pid, t, out.score, 0.0, policy)
        assert by_rules.sum() > 0 and (floored >= by_rules).all()
        # a rule that fires alarms at once (it held for its duration already), through the floor too
        assert (out.rules == view.rule_scores.max(axis=1)).all()
        at_once = apply_policy(pid, t, rule_scores, 0.0, policy, immediate=rule_scores > 0)
        assert (at_once >= by_rules).all() and (apply_policy(pid, t, out.score, 0.0, policy,
                                                             immediate=out.rules > 0) >= at_once).all()
    out = combine(learned, np.inf, comb, view, SIGNALS)
    assert ((out.score > 0) == (rule_scores > 0)).all(), "at +inf the model adds no alarm of its own"
    assert np.isfinite(out.score).all()
    alone = combine(learned, np.inf, Combination.plain(), FloorView(np.empty((n, 0)), None), SIGNALS)
    assert np.isfinite(alone.score).all() and (alone.score < 0).all() and not alone.rule_driven.any()
    assert learned_scale(np.array([10.0]), 0.0, 1.0, 1.0)[0] == pytest.approx(np.tanh(10.0))
    assert learned_scale(np.array([-3.0]), 0.0, 1.5, 1.0)[0] == -2.0


def test_technical_signatures(checks):
    hr_double = np.r_[np.full(200, 70.0) + np.sin(np.arange(200)), np.full(100, 140.0) + np.sin(np.arange(100))]
    probe = np.r_[np.full(280, 98.0), np.tile([60.0, 75.0, 52.0, 80.0], 5)]
    frozen = np.r_[70 + np.sin(np.arange(220)) * 3, np.full(80, 72.0)]
    held_cuff = np.repeat([86.0, 80.0, 74.0, 68.0], 75)  # a cuff reading held for 75 s each
    flush = np.r_[np.full(290, 120.0), np.full(10, 180.0)], np.r_[np.full(290, 70.0), np.full(10, 179.0)]
    gap = np.r_[np.full(200, 98.0), np.full(20, np.nan), np.full(80, 88.0)]
    X = np.concatenate([window(hr=hr_double), window(spo2=probe), window(hr=frozen), window(map=held_cuff),
                        window(sbp=flush[0], dbp=flush[1]), window(spo2=gap), window()])
    f = checks.flags(X, SIGNALS, {"spo2": 100.0})
    hr, spo2, mp = SIGNALS.index("hr"), SIGNALS.index("spo2"), SIGNALS.index("map")
    assert f.jump_up[0, hr] and not f.erratic[0, hr], "an ECG double count: one jump up"
    assert f.erratic[1, spo2], "a slipping probe: many jumps"
    assert f.frozen[2, hr] and not f.frozen[3, mp], "a frozen live signal, not a held cuff reading"
    assert not f.any_jump[3, mp], "a new cuff reading is not a jump"
    assert f.flush[4, SIGNALS.index("sbp")] and f.flush[4, mp]
    assert f.gap[5, spo2]
    assert not f.any_signal()[6], "steady values show nothing"
    assert f.any_signal().tolist() == [True, True, True, False, True, True, False]
    # which alarms they demote: an upper-limit rule on a jump up; a lower-limit rule not on a single jump
    assert f.rule_technical(hr, above=True)[0] and not f.rule_technical(hr, above=False)[0]
    assert f.rule_technical(spo2, above=False)[1] and f.rule_technical(spo2, above=False)[5]


def test_rule_alarms_on_artefacts_are_technical_and_real_ones_physiological(rules, checks):
    comb = Combination(1.0, 1.0, rules, checks, {"spo2": 100.0})
    probe = np.r_[np.full(280, 98.0), np.tile([60.0, 75.0, 52.0, 80.0], 5)]
    desat = np.r_[np.full(200, 98.0), np.linspace(98, 84, 60), np.full(40, 84.0)]
    double = np.r_[np.full(200, 70.0) + np.sin(np.arange(200)), np.full(100, 140.0) + np.sin(np.arange(100))]
    tachy = np.r_[np.full(150, 80.0), np.linspace(80, 135, 60), np.full(90, 135.0) + np.sin(np.arange(90))]
    X = np.concatenate([window(spo2=probe), window(spo2=desat), window(hr=double), window(hr=tachy)])
    view = FloorView(rules.rule_scores(X), checks.flags(X, SIGNALS, {"spo2": 100.0}))
    out = combine(np.full(4, -3.0), 0.0, comb, view, SIGNALS)
    assert (out.score > 0).all() and out.rule_driven.all()
    assert out.technical.tolist() == [True, False, True, False]
    no_checks = combine(np.full(4, -3.0), 0.0, Combination(1.0, 1.0, rules, None, {}), view, SIGNALS)
    assert not no_checks.technical.any(), "without technical checks every alarm is physiological"


def test_checks_on_the_alarming_windows_only_give_the_same_outputs(rules, checks):
    """`outputs_of_windows` runs the technical checks only where the score is above 0: the same outputs as
    checking every window, for rule-driven and model-driven alarms, artefacts and quiet windows alike."""
    comb = Combination(1.0, 1.0, rules, checks, {"spo2": 100.0})
    rng = np.random.default_rng(4)
    probe = np.r_[np.full(280, 98.0), np.tile([60.0, 75.0, 52.0, 80.0], 5)]
    double = np.r_[np.full(200, 70.0) + np.sin(np.arange(200)), np.full(100, 140.0) + np.sin(np.arange(100))]
    frozen = np.r_[70 + np.sin(np.arange(220)) * 3, np.full(80, 72.0)]
    kinds = [window(), window(spo2=probe), window(hr=double), window(hr=frozen), window(map=np.full(90, 55.0)),
             window(map=55 + rng.normal(0, 1.5, 90))]
    X = np.concatenate([kinds[i] for i in rng.integers(0, len(kinds), 200)])
    for learned, threshold in ((rng.normal(0, 1, 200), 0.8), (rng.normal(0, 1, 200), np.inf), (None, 0.0)):
        lazy = outputs_of_windows(learned, threshold, comb, X, SIGNALS)
        full = combine(learned, threshold, comb, floor_view(comb, X, SIGNALS), SIGNALS)
        for f in ("score", "rule_driven", "technical"):
            np.testing.assert_array_equal(getattr(lazy, f), getattr(full, f))
        assert lazy.technical.any() and (lazy.score > 0).any() and not lazy.technical[lazy.score <= 0].any()


def test_technical_params_are_checked(tmp_path, root):
    import yaml

    from biostream.core.config import ConfigError

    raw = yaml.safe_load((root / "configs/technical.yaml").read_text())
    raw["lookback_s"] = raw["context_s"]
    with pytest.raises(ConfigError, match="lookback_s shorter than context_s"):
        TechnicalChecks.from_dict(raw)
    del raw["frozen_s"]
    with pytest.raises(ConfigError, match="missing key 'frozen_s'"):
        TechnicalChecks.from_dict(raw)
