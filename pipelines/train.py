"""DVC stage `train`: every detector with its tuned params, its threshold calibrated on the validation patients,
saved as a self-contained bundle and logged to MLflow (`biostream.stages.train`).

    python -m pipelines.train --features data/features --synthetic data/synthetic --vitaldb data/vitaldb \\
        --recordings data/recordings --real data/real --tuned results/tune --out models --metrics metrics/train.json
"""

from __future__ import annotations

import sys

from biostream.stages import cli, train


def main(argv: list[str] | None = None) -> int:
    return cli.main(train.run, train.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
