"""Real recordings decide (issue 28): the pipeline scores every detector on the project's real recordings
(data/external/real, the `real` source), reports what the learned models add and cost there, caps and judges them
on it, and too little data is never a learned alarm."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from biostream.core.params import validate
from tests.pipeline.test_dvc_pipeline import params_with, register, registry

pytestmark = pytest.mark.slow

LEARNED = ("iforest", "ocsvm", "lstm_ae")


def test_every_detector_is_evaluated_on_the_real_recordings_with_reference_rows(repo, reproduced):
    manifest = json.loads((repo / "metrics/real.json").read_text())
    assert manifest["status"] == "ok" and manifest["cases"] == 26, "the small profile reads the BIDMC patients"
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    floor = metrics["clinical"]["real"]
    assert floor["rule_events"]["events"] == manifest["alarm_events"] > 0
    assert floor["own_alarms"]["alarms_per_hour"] == 0, "the floor alone adds nothing to itself"
    hours = manifest["rows"] / 3600.0
    for name in (*LEARNED, "clinical", "monitor", "map_alone"):
        m = metrics[name]["real"]
        for key in ("alarms_per_hour", "physiological_per_hour", "technical_per_hour"):
            assert m["own_alarms"][key] >= 0, (name, key)
        assert {"recall", "alarms_per_hour", "auroc"} <= set(m["rule_events"])
        assert "early_warning_auroc" in m
        # every recording starts with a learning baseline (the learned models read nothing yet), one episode each
        assert m["conditions"]["learning_baseline_per_hour"] == pytest.approx(manifest["cases"] / hours, rel=1e-6)
    for name in LEARNED:  # never less safe than the monitor's own rules, on real data too
        m = metrics[name]["real"]
        assert m["rule_events"]["recall"] >= floor["rule_events"]["recall"], name
        assert m["rule_events"]["alarms_per_hour"] >= floor["rule_events"]["alarms_per_hour"] - 1e-9, name
    train = json.loads((repo / "metrics/train.json").read_text())
    cap = yaml.safe_load((repo / "params.yaml").read_text())["threshold"]["max_own_alarms_per_hour"]
    for name in LEARNED:  # the threshold's cap holds on the recordings it was calibrated with
        assert train[name]["real_own_alarms_per_hour"] <= cap + 1e-9, name
        assert metrics[name]["real"]["own_alarms"]["alarms_per_hour"] == pytest.approx(
            train[name]["real_own_alarms_per_hour"], abs=1e-9), name
    realism = json.loads((repo / "metrics/realism.json").read_text())["rule_alarm_episodes_per_patient_hour"]
    assert realism["clinical"]["real"] == floor["rule_events"]["alarms_per_hour"]
    assert realism["clinical"]["real_over_synthetic"] == pytest.approx(
        floor["rule_events"]["alarms_per_hour"] / metrics["clinical"]["synthetic"]["rule_events"]["alarms_per_hour"])


def test_the_registry_decides_with_the_real_figures_beside_the_synthetic(repo, reproduced):
    decision = json.loads((repo / "results/register.json").read_text())
    budget = yaml.safe_load((repo / "params.yaml").read_text())["register"]["safety"]["max_own_alarms_per_hour"]
    assert set(decision["real"]) >= {*LEARNED, "clinical"}
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    for name, per in decision["real"].items():
        assert per["real"]["own_alarms_per_hour"] == metrics[name]["real"]["own_alarms"]["alarms_per_hour"]
        assert decision["candidates_safety"][name] == (per["real"]["ok"] and decision["candidates_safety"][name])
    champion = registry(repo).get_model_version_by_alias(decision["model_name"], "champion")
    detector = champion.tags["detector"]
    assert decision["real"][detector]["real"]["own_alarms_per_hour"] <= budget
    assert champion.tags["real.real.own_alarms_per_hour"].endswith(f"(budget {budget:.3f})")
    assert "## Real recordings (against clinical, the floor alone)" in champion.description


def test_a_model_that_alarms_at_every_recording_start_is_never_champion(repo, reproduced, tmp_path):
    """The Isolation Forest bundle made to read from a recording's first second (no learning baseline) with its
    threshold under its scores of every real recording's first minute: it alarms at every start, its own alarms on
    the real recordings exceed the budget, so it is never champion, whatever its synthetic metric; beside the floor
    alone, the floor alone is chosen."""
    from biostream.core.config import Configs, load_yaml
    from biostream.features import windows_at
    from biostream.features.readiness import Readiness
    from biostream.features.table import FeatureSet
    from biostream.models.bundle import ModelBundle
    from biostream.models.objective import Objective
    from biostream.tracking.register import TestSet

    bundle = ModelBundle.load(repo / "models/iforest")
    bundle.pipeline.readiness = Readiness()  # reads every signal from its first value
    features = FeatureSet.open(repo / "data/features", {"synthetic": repo / "data/synthetic",
                                                         "real": repo / "data/real"})
    real = features.part("real")
    starts = real.rows[real.rows["time_s"] < 60]
    windows = windows_at(real.vitals, bundle.pipeline.signals, bundle.window_s, starts["patient_id"].to_numpy(),
                         starts["time_s"].to_numpy())
    learned = bundle.detector.decision_function(bundle.pipeline.view(bundle.detector.input_view, windows))
    bundle.detector.set_threshold(float(learned.min()) - 1e-6)
    models = tmp_path / "models"
    shutil.copytree(repo / "models", models)
    bundle.save(models / "startle")
    index = json.loads((models / "index.json").read_text())
    index["startle"] = {"threshold": bundle.detector.threshold_, "run_id": "not-in-this-store", "model_uri": ""}
    (models / "index.json").write_text(json.dumps(index))
    params = load_yaml(repo / "params.yaml")
    rules = Configs.load(repo / "configs/signals.yaml", repo / "configs/alarms.yaml").rules
    objective = Objective.of(validate(params).objective, rules)
    evaluation = json.loads((repo / "metrics/evaluate.json").read_text())
    # scored from its own windows, as the registry re-scores it (the stored features hide what it now reads)
    evaluation["startle"] = {source: TestSet(features, source, objective, split).bundle_metrics(bundle)
                             for source, split in (("synthetic", "test"), ("real", None))}
    own = evaluation["startle"]["real"]["own_alarms"]["alarms_per_hour"]
    budget = params["register"]["safety"]["max_own_alarms_per_hour"]
    manifest = json.loads((repo / "metrics/real.json").read_text())
    assert own >= 0.8 * manifest["cases"] / (manifest["rows"] / 3600.0) > budget, \
        "an own alarm at (nearly) every recording start (one merged into a floor alarm is not its own)"
    (tmp_path / "evaluate.json").write_text(json.dumps(evaluation, allow_nan=True))
    name = "startle-check"
    register(repo, tmp_path / "decision.json", params_with(repo, tmp_path, model_name=name, candidates=["startle"]),
             models=models, evaluation=tmp_path / "evaluate.json")
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["detector"] == "startle" and not decision["promoted"]
    assert f"real recordings: {own:.2f} own alarm episodes/h > budget" in decision["reason"]
    assert not decision["safety"]["real"]["real"]["own_ok"]
    version = registry(repo).get_model_version_by_alias(name, "challenger")
    assert version.tags["safety"] == "failed" and "| real |" in version.description
    register(repo, tmp_path / "decision.json", params_with(repo, tmp_path, model_name=name + "-2",
                                                           candidates=["startle", "clinical"]),
             models=models, evaluation=tmp_path / "evaluate.json")
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["detector"] == "clinical" and decision["promoted"]


NORMAL = {  # levels a real patient shows when nothing is wrong (the BIDMC fixtures' and ICU monitoring's ranges),
    # inside every bedside limit with room for the noise below
    "hr": (55.0, 110.0), "spo2": (93.0, 100.0), "rr": (8.0, 27.0), "map": (68.0, 105.0), "temp": (36.0, 37.8),
    "etco2": (30.0, 45.0)}
NOISE = {"hr": 2.0, "spo2": 0.7, "rr": 1.5, "map": 2.5, "temp": 0.03, "etco2": 1.0}


@st.composite
def normal_recording(draw):
    """15 minutes of a real patient with nothing wrong: any levels within NORMAL, integer numerics with noise, any
    subset of signals never monitored, and one stretch of any length where some signals read nothing."""
    signals = ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "etco2")
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    t = 900
    present = draw(st.sets(st.sampled_from(("hr", "spo2", "bp", "rr", "temp", "etco2")), min_size=1))
    values = np.full((len(signals), t), np.nan)
    for key, (lo, hi) in NORMAL.items():
        level = draw(st.floats(lo, hi))
        walk = np.clip(np.cumsum(rng.normal(0, NOISE[key] * 0.05, t)), -NOISE[key], NOISE[key])
        x = np.clip(level + walk + rng.normal(0, NOISE[key] * 0.5, t), lo - 1, hi + 1)
        values[signals.index(key)] = x if key == "temp" else np.round(x)
    pp = draw(st.floats(30, 55))
    values[signals.index("sbp")] = np.round(values[signals.index("map")] + 2 * pp / 3)
    values[signals.index("dbp")] = np.round(values[signals.index("map")] - pp / 3)
    for i, s in enumerate(signals):
        if ("bp" if s in ("sbp", "dbp", "map") else s) not in present:
            values[i] = np.nan
    gone = draw(st.sets(st.sampled_from(signals), max_size=len(signals)))
    start = draw(st.integers(0, t - 1))
    length = draw(st.integers(1, t))
    for s in gone:
        values[signals.index(s), start:start + length] = np.nan
    return values


@pytest.fixture(scope="module")
def trained(repo, reproduced):
    from biostream.models.bundle import ModelBundle

    return {name: ModelBundle.load(repo / "models" / name) for name in LEARNED}


@settings(max_examples=12, deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(values=normal_recording())
def test_normal_real_vitals_raise_no_learned_alarm_from_the_first_second_and_after_any_gap(trained, values):
    """Section 1 of issue 28, on every trained detector: too little data (a new recording, a signal never monitored,
    a signal that goes missing for any length) is never an alarm; the conditions say what it is. As served: no
    alarm at all (the levels are inside every bedside limit). Whatever the threshold (here one under every learned
    score, so that any learned score alarms): a learned score exists exactly where a signal has been observed long
    enough, so the first seconds of a recording are the rules' alone."""
    from biostream.features.windows import recording_windows
    from biostream.models.alarms import class_alarms

    t = values.shape[1]
    for name, bundle in trained.items():
        windows = recording_windows(values.T, bundle.window_s, np.arange(t))
        out = bundle.outputs(windows)
        alarms = class_alarms(np.zeros(t, dtype=int), np.arange(t), out, bundle.threshold, bundle.policy)
        alarm = alarms["physiological"] | alarms["technical"]
        assert not alarm.any(), (name, int(np.argmax(alarm)), float(out.score.max()))
        cond = bundle.conditions(windows)
        seen = ~np.isnan(values).all(axis=0)
        first = int(np.argmax(seen))
        assert not seen.any() or (not cond.learning[:first].any() and cond.learning[first]), \
            "a learning baseline from the first reading"
        read = bundle.pipeline.readiness.read(windows).any(axis=1)
        assert not read[:269].any(), "no signal is read in a recording's first 270 s"
        assert (cond.learning <= ~read).all()
        served = bundle.detector.threshold_
        try:  # a threshold under every learned score: any learned score alarms
            bundle.detector.threshold_ = -1e9
            got = bundle.outputs(windows)
        finally:
            bundle.detector.threshold_ = served
        np.testing.assert_array_equal(got.score[~read], out.rules[~read])  # the floor alone where nothing is read
        assert (got.score[read] > 0).all(), "a learned score wherever a signal is read"
