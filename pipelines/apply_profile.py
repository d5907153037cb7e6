"""Rewrite params.yaml with a profile's overrides merged in (for scratch copies, tests and CI).

    python -m pipelines.apply_profile configs/profiles/small.yaml [--params params.yaml]
"""

from __future__ import annotations

import argparse

import yaml

from biostream.core.config import load_yaml, merge_profile
from biostream.core.io import atomic_path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("profile")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    merged = merge_profile(load_yaml(args.params), load_yaml(args.profile))
    with atomic_path(args.params) as tmp:
        tmp.write_text(yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")


if __name__ == "__main__":
    main()
