"""DVC stage `package`: the registry's champion into the BentoML model store, and a bento built around it
(`biostream.stages.package`).

    python -m pipelines.package --register results/register.json --bentofile bentofile.yaml \\
        --build-ctx src --out results/bento.json
"""

from __future__ import annotations

import sys

from biostream.stages import cli, package


def main(argv: list[str] | None = None) -> int:
    return cli.main(package.run, package.Paths, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
