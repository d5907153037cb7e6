"""DVC stages `ingest_recordings` and `ingest_real`: recordings (CSV or Parquet, one file per case), labelled like
every dataset (`biostream.stages.ingest_recordings`).

    python -m pipelines.ingest_recordings --out data/recordings --metrics metrics/recordings.json
    python -m pipelines.ingest_recordings --dataset real --out data/real --metrics metrics/real.json

A file that cannot be used is skipped and named in the manifest's `failures` (file, row, column); with no file,
an empty dataset (exit status 2 with `require_data: true`).
"""

from __future__ import annotations

import sys

from biostream.stages import cli, ingest_recordings


def main(argv: list[str] | None = None) -> int:
    return cli.main(ingest_recordings.run, ingest_recordings.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
