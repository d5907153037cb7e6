"""What a logged model or a bento needs installed, derived from the code and the lock, never listed by hand.

The distributions are those of every third-party module the model's code imports (`biostream.core.closure`:
the pyfunc and every detector module, lazy imports included), at the versions `requirements.lock` pins. A
model logged this way loads in a fresh environment that installs exactly its requirements; a new import in
the bundled code adds its distribution by itself (tests/code/test_seams.py holds it).
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from biostream.core.closure import import_closure
from biostream.models.detectors.base import MODULES

LOCK = Path(__file__).resolve().parents[3] / "requirements.lock"
# where a module name maps to several distributions, the one the project installs it from
PREFERRED = {"mlflow": "mlflow", "tensorflow": "tensorflow-cpu"}
PYFUNC_ENTRIES = ("biostream.tracking.pyfunc", *MODULES.values())
SERVICE_ENTRIES = ("biostream.serving.service", *MODULES.values())
# what the service needs that no module imports by name: uvicorn (under `bentoml serve`) picks these up
SERVICE_EXTRAS = ("uvloop", "httptools")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical distribution name: 'name==version'} of the lock file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: models are logged from a checkout of the project (run `make "
                                "lock` to make it)")
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            out[canonical(line.split("==")[0])] = line
    return out


def distributions(modules: Iterable[str], known: Mapping[str, list[str]] | None = None) -> list[str]:
    """The distributions that provide top-level `modules` (canonical names, sorted)."""
    known = importlib.metadata.packages_distributions() if known is None else known
    out = set()
    for m in modules:
        if m in PREFERRED:
            out.add(canonical(PREFERRED[m]))
        elif m in known:
            out.update(canonical(d) for d in known[m][:1])
        else:
            raise LookupError(f"no installed distribution provides the module '{m}' that the bundled code imports; "
                              "install it (make setup) and add it to pyproject.toml")
    return sorted(out)


def pinned(dists: Iterable[str], lock: Mapping[str, str] | None = None) -> list[str]:
    """`name==version` of each distribution, as the lock pins it."""
    lock = read_lock() if lock is None else lock
    missing = [d for d in dists if canonical(d) not in lock]
    if missing:
        raise LookupError(f"{missing} are imported by the bundled code but not pinned in {LOCK.name}; add them to "
                          "pyproject.toml and run `make lock`")
    return [lock[canonical(d)] for d in dists]


def pyfunc_requirements() -> list[str]:
    """pip requirements of the logged MLflow model."""
    return pinned(distributions(import_closure(PYFUNC_ENTRIES).third_party))


def service_requirements() -> list[str]:
    """pip requirements of the bento."""
    return pinned(distributions(import_closure(SERVICE_ENTRIES).third_party) + list(SERVICE_EXTRAS))
