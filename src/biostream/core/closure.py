"""What a piece of the code imports, read from its syntax trees (nothing is imported or run).

`import_closure(entries)` follows every `import` and `from ... import` of the `biostream` modules reachable from
the entries (at module level and inside functions: a lazy import is still an import), and returns those
modules and the third-party top-level names they import. Two seams rest on it: a stage's `dvc.yaml` deps
must cover the closure of its CLI (tests/code/test_seams.py), and a logged model's requirements are the
distributions of its closure's third-party imports (`biostream.tracking.requirements`).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "biostream"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Closure:
    modules: frozenset[str]  # biostream modules (packages included: importing a.b runs a/__init__.py)
    third_party: frozenset[str]  # top-level names of imported modules outside the standard library and biostream

    def files(self) -> list[Path]:
        return sorted(p for p in (module_file(m) for m in self.modules) if p is not None)


def module_file(name: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The source file of a `biostream` module or package, or None if there is none."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST) -> Iterable[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for every absolute import in a tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module, tuple(a.name for a in node.names)


def import_closure(entries: Iterable[str | Path], root: Path = PACKAGE_DIR) -> Closure:
    """The closure of `entries`: module names (`biostream.x.y`) or paths of scripts (a stage's CLI)."""
    modules: set[str] = set()
    third: set[str] = set()
    todo: list[Path | str] = list(entries)
    while todo:
        item = todo.pop()
        if isinstance(item, Path):
            path = item
        else:
            if item in modules:
                continue
            modules.add(item)
            parts = item.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
            path = module_file(item, root)
            if path is None:
                raise ModuleNotFoundError(f"{item}: no such module under {root}")
        for module, names in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            top = module.split(".")[0]
            if top == PACKAGE:
                todo.append(module)
                todo.extend(f"{module}.{n}" for n in names if module_file(f"{module}.{n}", root) is not None)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return Closure(frozenset(modules), frozenset(third))
