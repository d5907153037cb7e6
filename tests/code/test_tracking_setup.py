"""Where tracking and the registry lock go for each kind of `tracking.uri` (the pure part; the real server and the
real PostgreSQL lock are tests/pipeline/test_shared_tracking.py's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from biostream.core.config import ConfigError, load_yaml
from biostream.core.mlflow_store import TrackingParams, check_server
from biostream.core.params import validate
from biostream.core.runtime import free_port
from biostream.tracking.lock import conninfo, lock_key, lock_target
from tests.conftest import ROOT


def test_an_embedded_store_locks_a_file_beside_it():
    assert lock_target("sqlite:///stores/mlflow.db", None, Path("results/register.json")) == (
        "file", "stores/mlflow.register.lock")


def test_a_postgresql_store_locks_on_itself_and_lock_url_wins():
    pg = "postgresql+psycopg://postgres@db/mlflow"
    assert lock_target(pg, None, Path("x.json")) == ("postgres", pg)
    other = "postgresql://postgres@db/locks"
    assert lock_target(pg, other, Path("x.json")) == ("postgres", other)
    assert lock_target("http://mlflow:5000", other, Path("x.json")) == ("postgres", other)


def test_a_server_without_a_shared_lock_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match=r"register.lock_url.*PostgreSQL"):
        lock_target("http://mlflow:5000", None, Path("x.json"))
    with pytest.raises(ConfigError, match="must be a PostgreSQL URL"):
        lock_target("http://mlflow:5000", "sqlite:///locks.db", Path("x.json"))


def test_lock_urls_and_keys():
    assert conninfo("postgresql+psycopg://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert conninfo("postgres://u@h/db") == "postgresql://u@h/db"
    assert lock_key("vitals") == lock_key("vitals") != lock_key("vitals-2")
    assert -(2**63) <= lock_key("vitals") < 2**63  # a bigint


def test_register_params_read_lock_url():
    params = load_yaml(ROOT / "params.yaml")
    assert validate(params).register_.lock_url is None  # the embedded default
    params["register"]["lock_url"] = "postgresql+psycopg://u@h/db"
    assert validate(params).register_.lock_url == "postgresql+psycopg://u@h/db"
    params["register"]["lock_url"] = ""
    assert validate(params).register_.lock_url is None, "an empty value is no URL"


def test_artifact_location_per_kind_of_store(tmp_path):
    local = TrackingParams("sqlite:///x.db", "e", str(tmp_path / "art"))
    assert local.artifact_location() == (tmp_path / "art").resolve().as_uri() and (tmp_path / "art").is_dir()
    assert TrackingParams("postgresql+psycopg://u@h/db", "e", "s3://bucket/x").artifact_location() == "s3://bucket/x"
    server = TrackingParams("http://mlflow:5000", "e", str(tmp_path / "unused"))
    assert server.server and server.artifact_location() is None  # the server decides (proxied artifacts)


def test_a_server_that_does_not_answer_fails_at_once_naming_tracking_uri():
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ConnectionError, match=r"tracking.uri .*does not answer"):
        check_server(uri, timeout_s=2)
