"""The pipeline's stages as typed functions, one module per DVC stage: `run(params, paths) -> result`.

`params` is `params.yaml` validated into `biostream.core.params.Params` (a typed section per attribute); `paths`
the stage's `Paths` (a frozen dataclass: the folders and files it reads and writes, named as `dvc.yaml` passes
them). `pipelines/<stage>.py` is
the command line DVC calls (`biostream.stages.cli` builds it from `Paths`); tests call `run` in process. A problem
the user must fix is a `StageError` naming it and the fix (the command line prints it and exits with its code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class StageError(RuntimeError):
    """What stops a stage, named with the fix; `code` is the command line's exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def help_of(text: str) -> dict[str, str]:
    """A `Paths` field's help on the command line (`field(metadata=help_of(...))`)."""
    return {"help": text}


@dataclass(frozen=True, kw_only=True)
class Datasets:
    """The four dataset stages' output folders, which `featurize` and every stage after it read."""

    synthetic: Path = field(metadata=help_of("the generate stage's output folder"))
    vitaldb: Path = field(metadata=help_of("the ingest_vitaldb stage's output folder"))
    recordings: Path = field(metadata=help_of("the ingest_recordings stage's output folder"))
    real: Path = field(metadata=help_of("the ingest_real stage's output folder"))

    def datasets(self) -> dict[str, Path]:
        return {"synthetic": self.synthetic, "vitaldb": self.vitaldb, "recordings": self.recordings,
                "real": self.real}

