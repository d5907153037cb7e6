"""Saving scikit-learn estimators with skops (no pickle): only scikit-learn and NumPy types are trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import skops.io as sio

_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def dump(obj: Any, path: Path) -> None:
    sio.dump(obj, path)


def load(path: Path) -> Any:
    untrusted = sio.get_untrusted_types(file=path)
    unknown = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if unknown:
        raise ValueError(f"{path}: refuses to load types outside scikit-learn/NumPy: {unknown}")
    return sio.load(path, trusted=untrusted)
