"""The repository's configs load, and bad configs fail with a message that names the problem."""

from __future__ import annotations

import pytest
import yaml

from biostream.core.config import (
    ConfigError,
    Configs,
    SplitParams,
    load_alarm_rules,
    load_signals,
    load_yaml,
    merge_profile,
)
from biostream.core.params import section


def test_repository_configs_load(configs):
    assert configs.signals.keys == ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "etco2")
    assert {r.kind for r in configs.rules} >= {"tachycardia", "desaturation", "hypotension", "hypercapnia"}
    hypotension = next(r for r in configs.rules if r.kind == "hypotension")
    assert (hypotension.signal, hypotension.op, hypotension.threshold, hypotension.min_duration_s) == (
        "map", "<", 65.0, 60)
    for rule in configs.rules:
        assert rule.source.strip(), f"rule {rule.kind} must cite where its limit comes from"
        lo, hi = configs.signals[rule.signal].valid
        assert lo < rule.threshold < hi


def test_signal_tracks_cover_vitaldb_and_intellivue_names(configs, root):
    tracks = set(configs.signals.all_tracks())
    assert {"Solar8000/HR", "Solar8000/PLETH_SPO2", "Solar8000/ART_MBP", "Solar8000/NIBP_MBP",
            "Solar8000/RR_CO2", "Solar8000/BT", "Solar8000/ETCO2", "Intellivue/HR",
            "Intellivue/PLETH_SAT_O2", "Intellivue/ABP_MEAN"} <= tracks
    # every Solar8000 track we map exists in VitalDB's track dictionary
    dictionary = (root / "tests/fixtures/vitaldb_track_names.csv").read_text(encoding="utf-8-sig")
    known = {line.split(",")[0] for line in dictionary.splitlines()[1:]}
    unknown = [t for t in tracks if t.split("/")[0] in {"Solar8000", "Primus", "EV1000", "Vigilance", "CardioQ"}
               and t not in known]
    assert not unknown, f"tracks not in VitalDB's dictionary: {unknown}"
    assert all(a.hold_s > 0 for a in configs.signals["map"].tracks if "NIBP" in a.track)


def test_unknown_rule_signal_is_named(tmp_path, root):
    bad = tmp_path / "alarms.yaml"
    bad.write_text(yaml.safe_dump({"rules": [{"kind": "x", "signal": "lactate", "op": ">", "threshold": 1,
                                              "min_duration_s": 5, "source": "s", "unit": 1, "weight": 1}]}))
    with pytest.raises(ConfigError, match=r"rules\[0\]: signal 'lactate' is not one of hr, spo2"):
        load_alarm_rules(bad, load_signals(root / "configs/signals.yaml"))


def test_missing_key_is_named(tmp_path, root):
    bad = tmp_path / "alarms.yaml"
    bad.write_text(yaml.safe_dump({"rules": [{"kind": "x", "signal": "hr", "op": ">", "threshold": 1,
                                              "source": "s"}]}))
    with pytest.raises(ConfigError, match="missing key 'min_duration_s'"):
        Configs.load(root / "configs/signals.yaml", bad)


def test_missing_file_says_where(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml(tmp_path / "nope.yaml")


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        section(SplitParams, {"seed": 1, "train": 0.7, "val": 0.2, "test": 0.2})


def test_profile_merge_and_typo(root):
    params = load_yaml(root / "params.yaml")
    merged = merge_profile(params, {"generate": {"n_patients": 3}})
    assert merged["generate"]["n_patients"] == 3
    assert merged["generate"]["seed"] == params["generate"]["seed"]
    with pytest.raises(ConfigError, match="'n_patient' does not exist"):
        merge_profile(params, {"generate": {"n_patient": 3}})
