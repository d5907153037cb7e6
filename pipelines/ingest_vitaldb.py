"""DVC stage `ingest_vitaldb`: real VitalDB cases, labelled like the synthetic cohort
(`biostream.stages.ingest_vitaldb`).

    python -m pipelines.ingest_vitaldb --out data/vitaldb --metrics metrics/vitaldb.json

With no case from any source it writes an empty dataset and says so loudly (exit status 2 with
`ingest_vitaldb.require_data: true`).
"""

from __future__ import annotations

import sys

from biostream.stages import cli, ingest_vitaldb


def main(argv: list[str] | None = None) -> int:
    return cli.main(ingest_vitaldb.run, ingest_vitaldb.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
