"""`params.yaml` is one typed model (`biostream.core.params.Params`, a typed section per attribute, no hand-written
parser), validated once when a stage starts: the
repository's file and its profiles pass; a misspelt or unknown key, a value of the wrong type or out of range, a
missing key and an inconsistent pair are each named, with the file and the fix, all at once; a stage refuses such a
file before it does any work."""

from __future__ import annotations

import copy
import typing

import pytest
import yaml
from pydantic import BaseModel

from biostream.core.config import ConfigError, load_yaml, merge_profile
from biostream.core.params import Params, load_params, validate
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def raw() -> dict:
    return load_yaml(ROOT / "params.yaml")


def test_the_repository_params_and_every_profile_are_valid(raw):
    params = validate(raw)
    assert isinstance(params, Params)
    assert params.alarms.k == raw["alarms"]["k"] and params.register_.safety.baseline == "clinical"
    assert params.stream.retention.seconds_days == raw["stream"]["retention"]["seconds_days"]
    for profile in sorted((ROOT / "configs/profiles").glob("*.yaml")):
        validate(merge_profile(raw, load_yaml(profile)), profile)
    assert set(Params.model_fields) - {"register_"} | {"register"} == set(raw), "every section is typed"


@pytest.mark.parametrize(("change", "says"), [
    (lambda p: p["alarms"].update(refactory_s=60),
     "alarms.refactory_s: unknown key; did you mean 'refractory_s'? the keys here are k, n, refractory_s"),
    (lambda p: p["register"]["safety"].update(max_own_alarm_per_hour=0.1),
     "register.safety.max_own_alarm_per_hour: unknown key; did you mean 'max_own_alarms_per_hour'?"),
    (lambda p: p.update(stram={}), "stram: unknown key; did you mean 'stream'?"),
    (lambda p: p["tune"].update(workers="two"), "tune.workers: Input should be a valid integer"),
    (lambda p: p["featurize"].update(min_observed=1.5), "featurize.min_observed: Input should be less than or equal"),
    (lambda p: p["alarms"].update(k=9), "alarms: k (9) of the last n (5) seconds: k must be at most n"),
    (lambda p: p["splits"].update(train=0.7), "splits: train + val + test must sum to 1"),
    (lambda p: p["featurize"].update(recent_s=4000), "featurize: window geometry: recent_s (4000) must be within"),
    (lambda p: p["tune"].update(heartbeat_s=90), "tune: heartbeat_s (90) must be below grace_s"),
    (lambda p: p["stream"]["retention"].pop("every_s"), "stream.retention.every_s: missing"),
    (lambda p: p["ingest_real"].update(section="ingest_recordings"), "ingest_real.section: unknown key"),
    (lambda p: p["sources"].update(train=["synthetc"]), "sources.train.0: Input should be 'synthetic'"),
    (lambda p: p["tracking"].pop("uri"), "tracking.uri: missing"),
    (lambda p: p["stream"]["retention"].update(seconds_days=0), "stream.retention.seconds_days: Input should be "
                                                                "greater than 0"),
])
def test_a_bad_params_file_is_named_with_the_key_and_the_fix(raw, tmp_path, change, says):
    bad = copy.deepcopy(raw)
    change(bad)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(ConfigError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path}: ") and says in str(error.value), str(error.value)


def test_no_section_has_a_default_for_a_key_the_file_owns():
    """A default in a section's dataclass would fill a key the file left out, silently: there is none."""
    import dataclasses

    from biostream.core.params import fields_of

    todo, seen = [Params], set()
    while todo:
        kind = todo.pop()
        if kind in seen:
            continue
        seen.add(kind)
        if dataclasses.is_dataclass(kind):
            defaults = [f.name for f in dataclasses.fields(kind)
                        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
            assert not defaults, f"{kind.__name__}: {defaults}"
        todo += [k for t in fields_of(kind).values() for k in (t, *typing.get_args(t))
                 if isinstance(k, type) and (dataclasses.is_dataclass(k) or issubclass(k, BaseModel))]
    assert len(seen) >= 20, sorted(k.__name__ for k in seen)


def test_every_problem_is_named_at_once(raw):
    bad = copy.deepcopy(raw)
    bad["alarms"]["refactory_s"] = 60
    bad["tune"]["workers"] = 0
    del bad["serve"]["workers"]
    with pytest.raises(ConfigError) as error:
        validate(bad)
    message = str(error.value)
    assert "alarms.refactory_s" in message and "tune.workers" in message and "serve.workers: missing" in message


def test_a_stage_refuses_a_misspelt_key_before_it_does_any_work(raw, tmp_path):
    from pipelines import generate

    bad = copy.deepcopy(raw)
    bad["generate"]["n_patient"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    out = tmp_path / "synthetic"
    with pytest.raises(ConfigError, match="generate.n_patient: unknown key; did you mean 'n_patients'"):
        generate.main(["--params", str(path), "--out", str(out), "--metrics", str(tmp_path / "m.json")])
    assert not out.exists() and not (tmp_path / "m.json").exists(), "nothing written"
