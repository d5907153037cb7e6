"""A real `dvc repro` of the small profile in a temporary copy of the working tree, shared by the pipeline,
registry and MLflow UI tests (one reproduction per test session)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from biostream.core.runtime import free_port, quiet_env
from tests.conftest import ROOT

PG = "postgresql+psycopg://postgres@127.0.0.1:5432"  # the server every machine of this project runs (trust auth)


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database on the local server, dropped after the block (its sessions ended first). Fails the
    test, naming the fix, when the server is not reachable: these tests do not skip."""
    import sqlalchemy

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG} ({exc.orig}); the scale-path tests need the local server "
                    "these machines run (start it, e.g. `service postgresql start`)", pytrace=False)
    try:
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE datname = :name"), {"name": name})
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@contextmanager
def mlflow_server(backend: str, folder: Path, env: dict[str, str], *args: str) -> Iterator[str]:
    """A real `mlflow server` on `backend` on a free port, with `args` added (one worker, no job runner: 2
    processes); yields its URL once /health answers, stops it after the block. Its log is `folder/server.log`."""
    import urllib.request

    from biostream.core.runtime import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", *args]
    log_path = folder / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=folder, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"mlflow server did not start:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def env_for(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `python` = this venv
    env["PYTHONPATH"] = f"{repo / 'src'}{os.pathsep}{repo}"  # the copy's code, not the checkout's
    env.update({k: v for k, v in quiet_env().items() if k not in env})
    env.update(CI="true", BIOSTREAM_ROOT=str(repo))
    return env


def run(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=repo, env=env_for(repo), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(repo, sys.executable, "-m", "dvc", *args, check=check)


DATASETS = {"synthetic": "data/synthetic", "vitaldb": "data/vitaldb", "recordings": "data/recordings",
            "real": "data/real"}  # the dataset stages' outputs, as dvc.yaml names them


@contextmanager
def inside(repo: Path) -> Iterator[None]:
    """Work in `repo` in this process as a stage run there would (its folder the working directory), then leave
    the working directory, the environment and MLflow's tracking URI and experiment as they were (MLflow exports
    the tracking URI to the environment, which later subprocesses would inherit)."""
    import mlflow.tracking._tracking_service.utils as tracking_utils
    import mlflow.tracking.fluent as fluent

    environ, uri, experiment = dict(os.environ), tracking_utils._tracking_uri, fluent._active_experiment_id
    try:
        with contextlib.chdir(repo):
            yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        tracking_utils._tracking_uri, fluent._active_experiment_id = uri, experiment


def stage(repo: Path, name: str, params: Path | dict | None = None, **paths) -> Any:
    """`biostream.stages.<name>.run` in this process on `repo`'s files (relative paths are the repo's), with
    `params` (a file, a mapping, or the repo's params.yaml) validated as the command line validates them; what it
    logs is in pytest's `caplog`. Its result."""
    import importlib

    from biostream.stages.cli import paths_of

    module = importlib.import_module(f"biostream.stages.{name}")
    return _run(repo, module, params, paths_of(module.Paths, **paths))


def _run(repo: Path, module: Any, params: Path | str | dict | None, paths: Any) -> Any:
    from biostream.core.config import load_yaml
    from biostream.core.params import validate

    with inside(repo):
        raw = params if isinstance(params, dict) else load_yaml(params or "params.yaml")
        return module.run(validate(raw, params if isinstance(params, (str, Path)) else "params.yaml"), paths)


def dvc_stages(repo: Path) -> dict[str, list[str]]:
    """Every stage of `repo`'s dvc.yaml (a `foreach` stage as `<name>@<item>`), in the file's order, with the
    arguments its command passes to `python -m pipelines.<module>`: [module, *arguments]."""
    import shlex

    import yaml

    out = {}
    for name, body in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        items = [(f"{name}@{item}", item) for item in body["foreach"]] if "foreach" in body else [(name, None)]
        for key, item in items:
            cmd = shlex.split((body["do"] if item else body)["cmd"].replace("${item}", str(item)))
            assert cmd[:2] == ["python", "-m"] and cmd[2].startswith("pipelines."), cmd
            out[key] = [cmd[2].removeprefix("pipelines."), *cmd[3:]]
    return out


def dvc_stage(repo: Path, name: str) -> Any:
    """Stage `name` of `repo`'s dvc.yaml run in this process with the arguments dvc.yaml gives its command line
    (`biostream.stages.<module>.run`, on the repo's params.yaml). Its result."""
    import importlib

    from biostream.stages.cli import arguments

    module_name, *argv = dvc_stages(repo)[name]
    module = importlib.import_module(f"biostream.stages.{module_name}")
    params, paths = arguments(module.Paths, argv, None)
    return _run(repo, module, params, paths)


def stop_processes_in(folder: Path, wait_s: float = 30.0) -> list[int]:
    """End every process of this user whose working directory is in `folder` (e.g. the `dvc exp queue-worker`s a
    `dvc queue start` leaves behind, which outlive `dvc queue stop`): SIGTERM, then SIGKILL after `wait_s`. The
    pids it had to end."""
    import signal

    def inside() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if Path(os.readlink(entry / "cwd")).is_relative_to(folder):
                        found.append(int(entry.name))
                except OSError:  # gone, or another user's
                    pass
        return found

    ended = inside()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in inside():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while inside() and time.monotonic() < deadline:
            time.sleep(0.5)
    return ended


def copy_repo(dst: Path, *profiles: str) -> Path:
    """A copy of the working tree (tracked and unignored files, no outputs) with the profiles applied, committed to
    a git repository of its own."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    for out in ("dvc.lock", "metrics"):  # start from nothing, as a fresh clone of a new project would
        shutil.rmtree(dst / out, ignore_errors=True) if (dst / out).is_dir() else (dst / out).unlink(missing_ok=True)
    for profile in profiles:
        run(dst, sys.executable, "-m", "pipelines.apply_profile", profile)
    run(dst, "git", "init", "-q")
    run(dst, "git", "add", "-A")
    run(dst, "git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "copy")
    return dst


@pytest.fixture(scope="session")
def repo(tmp_path_factory) -> Path:
    """A copy of the working tree with the small profile."""
    return copy_repo(tmp_path_factory.mktemp("biostream"), "configs/profiles/small.yaml")


@pytest.fixture(scope="session")
def reproduced(repo) -> subprocess.CompletedProcess:
    return dvc(repo, "repro")


# ---------------------------------------------------------------------------------------------- the served bento
BENTOML = str(Path(sys.executable).parent / "bentoml")


class Client:
    """A keep-alive JSON client (one connection, as a monitor gateway would hold), holding the keys of `served`: each
    request carries the key of the role its endpoint needs (as `biostream.serving.api` declares it), or `key`."""

    def __init__(self, served: int | tuple, key: str | None = None) -> None:
        port, self.keys = (served, {}) if isinstance(served, int) else (served[0], served[2])
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def _headers(self, method: str, path: str) -> dict[str, str]:
        key = self.key
        if key is None and self.keys:
            match = declared().match(method, path.split("?")[0])
            key = self.keys.get(match.op.roles[0]) if match is not None and match.op.roles else None
        return {} if key is None else {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: bytes | str | dict, content_type: str = "application/json"):
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.conn.request("POST", path, body=data, headers={"Content-Type": content_type,
                                                            **self._headers("POST", path)})
        return self._answer()

    def get(self, path: str) -> int:
        return self.get_json(path)[0]

    def get_json(self, path: str):
        self.conn.request("GET", path, headers=self._headers("GET", path))
        return self._answer()

    def _answer(self):
        """(status, the body as JSON, or as text when it is not JSON)."""
        resp = self.conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")


def declared() -> Any:
    """The service's operations and roles (`biostream.serving.api`; the limits here are not the bento's)."""
    from types import SimpleNamespace

    from biostream.serving.api import operations

    return operations(SimpleNamespace(max_body_bytes=1, max_batch_windows=1, signals=("hr",), max_window_s=1,
                                      stream={}))


@pytest.fixture(scope="session")
def served(repo, reproduced, tmp_path_factory):
    """`bentoml serve <bento>` as `make serve` does, on a free port, with a key per role; yields (port,
    results/bento.json, keys). One per session: the service, board and browser tests share it."""
    bento = json.loads((repo / "results" / "bento.json").read_text())
    port = free_port()
    env = env_for(repo)
    env["BENTOML_HOME"] = str(repo / bento["bentoml_home"])
    env["BIOSTREAM_STREAM_STORE"] = f"sqlite:///{repo / 'stores' / 'streams.db'}"  # as `make serve` sets it
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    keys = {}
    for role in ("gateway", "clinician", "integrator", "admin"):  # as an admin would, in the store the service uses
        made = subprocess.run([str(Path(sys.executable).parent / "biostream"), "keys", "create", "--role", role,
                               "--name", f"test {role}"], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, made.stderr
        keys[role] = json.loads(made.stdout)["key"]
    with log.open("w") as out:
        proc = subprocess.Popen([BENTOML, "serve", bento["bento"], "--host", "127.0.0.1", "--port", str(port)],
                                cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    SERVERS[port] = proc.pid
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"bentoml serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if Client(port).get("/readyz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"bentoml serve not ready after 180 s:\n{log.read_text()}")
            time.sleep(0.5)
        yield port, bento, keys
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text()  # no request may have been a 5xx, nor a refusal logged with a traceback (issue #39)
    assert "status=5" not in text and "Traceback" not in text, text[-5000:]


SERVERS: dict[int, int] = {}  # port -> the pid of `bentoml serve` on it (`served`)


def workers(port: int) -> list[int]:
    """The pids of the service's worker processes (children of `bentoml serve` on `port`)."""
    pid = SERVERS[port]
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


# ---------------------------------------------------------------------------------------------- a browser
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def chromium_page(width: int, height: int, timeout_ms: int) -> Iterator[Any]:
    """A page of headless Chromium (Debian's, through Playwright: its own browser download fails here)."""
    if not Path(CHROMIUM).is_file():
        raise AssertionError(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium "
                             "(or set CHROMIUM=/path/to/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
        page.set_default_timeout(timeout_ms)
        try:
            yield page
        finally:
            browser.close()
