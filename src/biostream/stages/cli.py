"""The command line of a stage, made from its `Paths` dataclass: a field is `--<name>` (dashes for underscores),
required unless it has a default, `--params` always; a `bool` field is a flag, `metadata["choices"]` its choices."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from biostream.core.params import Params, load_params
from biostream.core.runtime import configure
from biostream.stages import StageError


def parser(paths: type, description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    hints = typing.get_type_hints(paths)
    for f in dataclasses.fields(paths):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        extra: dict[str, Any] = {"help": f.metadata.get("help")}
        if "choices" in f.metadata:
            extra["choices"] = f.metadata["choices"]
        if kind is bool:
            p.add_argument(flag, dest=f.name, action="store_true", **extra)
            continue
        optional = f.default is not dataclasses.MISSING
        p.add_argument(flag, dest=f.name, required=not optional,
                       default=None if not optional or f.default is None else str(f.default), **extra)
    return p


def paths_of(paths: type, **values: Any) -> Any:
    """The stage's `Paths` of these values, a string made a `Path` where the field is one."""
    hints = typing.get_type_hints(paths)
    return paths(**{k: Path(v) if isinstance(v, str) and hints[k] in (Path, Path | None) else v
                    for k, v in values.items()})


def arguments(paths: type, argv: Sequence[str] | None, description: str | None) -> tuple[str, Any]:
    """(the params file, the stage's `Paths`) from the command line."""
    ns = vars(parser(paths, description).parse_args(argv))
    return ns["params"], paths_of(paths, **{f.name: ns[f.name] for f in dataclasses.fields(paths)
                                            if ns[f.name] is not None})


def main(run: Callable[[Params, Any], Any], paths: type, description: str | None,
         argv: Sequence[str] | None = None) -> int:
    """Parse the command line, set up logging, validate params.yaml and run the stage: the exit status (0, or a
    `StageError`'s code, its message printed)."""
    params_path, p = arguments(paths, argv, description)
    configure()
    try:
        run(load_params(params_path), p)
    except StageError as exc:
        print(str(exc), file=sys.stderr)
        return exc.code
    return 0
