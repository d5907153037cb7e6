"""DVC stage `tune@<detector>`: an Optuna study of one detector on the validation patients
(`biostream.stages.tune`).

    python -m pipelines.tune --detector iforest --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --recordings data/recordings --real data/real \\
        --search-space configs/search_spaces/iforest.yaml --out results/tune/iforest.json \\
        --model results/tune/iforest.model

The same command with `--join` adds a worker to the running study (from this or another machine).
"""

from __future__ import annotations

import sys

from biostream.stages import cli, tune


def main(argv: list[str] | None = None) -> int:
    return cli.main(tune.run, tune.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
