"""DVC stage `evaluate`: every trained bundle on the test patients of every source in `sources.evaluate`, with the
bedside monitor and the current MAP alone as reference rows (`biostream.stages.evaluate`).

    python -m pipelines.evaluate --models models --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --recordings data/recordings --real data/real --metrics metrics/evaluate.json \\
        --realism metrics/realism.json --plots plots --scores results/scores
"""

from __future__ import annotations

import sys

from biostream.stages import cli, evaluate


def main(argv: list[str] | None = None) -> int:
    return cli.main(evaluate.run, evaluate.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
