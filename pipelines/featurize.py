"""DVC stage `featurize`: windows -> features for every dataset, and the preprocessor fitted on the training
patients of `params.yaml: sources.train` (`biostream.stages.featurize`).

    python -m pipelines.featurize --synthetic data/synthetic --vitaldb data/vitaldb --recordings data/recordings \\
        --real data/real --out data/features --metrics metrics/featurize.json
"""

from __future__ import annotations

import sys

from biostream.stages import cli, featurize


def main(argv: list[str] | None = None) -> int:
    return cli.main(featurize.run, featurize.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
