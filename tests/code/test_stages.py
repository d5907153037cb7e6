"""The stage layer: every command dvc.yaml runs reads into its stage's typed `Paths`, and the command line made
from `Paths` names what is missing and returns a stage's error as its exit status."""

from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path

import pytest

from biostream.stages import StageError, cli, tune
from tests.conftest import ROOT
from tests.pipeline.conftest import dvc_stages


def test_every_command_in_dvc_yaml_reads_into_its_stage_paths():
    stages = dvc_stages(ROOT)
    assert {"generate", "featurize", "tune@iforest", "train", "evaluate", "register", "package"} <= set(stages)
    for name, (module, *argv) in stages.items():
        paths_type = importlib.import_module(f"biostream.stages.{module}").Paths
        params, paths = cli.arguments(paths_type, argv, None)
        assert params == "params.yaml", name
        given = {a[2:].replace("-", "_") for a in argv if a.startswith("--")}
        values = dataclasses.asdict(paths)
        for field in given:  # each argument reaches its field, a Path where the field is one
            assert str(values[field]) == argv[argv.index("--" + field.replace("_", "-")) + 1], (name, field)
        hints = typing.get_type_hints(paths_type)
        for field, value in values.items():
            a_path = hints[field] is Path or (hints[field] == Path | None and value is not None)
            assert isinstance(value, Path) == a_path, (name, field)


def test_a_missing_argument_is_named(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.arguments(tune.Paths, ["--detector", "iforest"], None)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--features" in err and "--search-space" in err and "--out" in err


def test_a_worker_of_a_study_gets_the_same_paths_joined():
    _, paths = cli.arguments(tune.Paths, dvc_stages(ROOT)["tune@ocsvm"][1:], None)
    command = tune.command(paths, Path("/tmp/p.yaml"))
    assert command[1:3] == ["-m", "pipelines.tune"]
    params, again = cli.arguments(tune.Paths, command[3:], None)
    assert params == "/tmp/p.yaml" and again == dataclasses.replace(paths, join=True)


def test_a_stage_error_is_printed_and_is_the_exit_status(tmp_path, capsys):
    def run(params, paths):
        raise StageError("tune: no validation patients; add recordings", code=2)

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    argv = ["--params", str(params), *dvc_stages(ROOT)["tune@iforest"][1:]]
    assert cli.main(run, tune.Paths, None, argv) == 2
    assert "no validation patients; add recordings" in capsys.readouterr().err
    assert cli.main(lambda params, paths: None, tune.Paths, None, argv) == 0
