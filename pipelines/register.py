"""DVC stage `register`: the best evaluated detector into the MLflow model registry, champion only if better and
safe (`biostream.stages.register`).

    python -m pipelines.register --models models --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --recordings data/recordings --real data/real --evaluation metrics/evaluate.json \\
        --out results/register.json
"""

from __future__ import annotations

import sys

from biostream.stages import cli, register


def main(argv: list[str] | None = None) -> int:
    return cli.main(register.run, register.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
