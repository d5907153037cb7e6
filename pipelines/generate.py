"""DVC stage `generate`: the synthetic cohort with labelled anomalies (`biostream.stages.generate`).

    python -m pipelines.generate --out data/synthetic --metrics metrics/synthetic.json
"""

from __future__ import annotations

import sys

from biostream.stages import cli, generate


def main(argv: list[str] | None = None) -> int:
    return cli.main(generate.run, generate.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
