"""Stream one bed into a hypotension alarm through POST /ingest: five calm minutes, then a mean arterial pressure
falling under the bedside limit of 65 mmHg over two minutes and staying there (docs/board.md). Prints the alarm
episode the service opened.

    source stores/dev-keys.env && python examples/stream_a_bed.py [--url http://127.0.0.1:3000] [--bed ward3-bed7]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import urllib.request

CALM = {"hr": (78, 3), "spo2": (97, 0.8), "sbp": (118, 4), "dbp": (68, 3), "map": (85, 3), "rr": (14, 1.5),
        "temp": (36.8, 0.1)}  # mean and spread of each signal


def send(url: str, key: str, bed: str, start: int, n: int, **to: float) -> list[dict]:
    """`n` seconds of the bed from `start` (seconds since the epoch); the signals in `to` move to their target over
    two minutes. The episodes the service opened."""
    vitals = {s: [round(m + (to.get(s, m) - m) * min(1, i / 120) + random.gauss(0, sd), 1) for i in range(n)]
              for s, (m, sd) in CALM.items()}
    vitals["spo2"] = [min(v, 100.0) for v in vitals["spo2"]]
    body = json.dumps({"samples": [{"bed": bed, "start": start, "vitals": vitals}]}).encode()
    req = urllib.request.Request(f"{url}/ingest", body, {"Content-Type": "application/json",
                                                         "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["beds"][0]["opened"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:3000")
    ap.add_argument("--bed", default="ward3-bed7")
    args = ap.parse_args()
    key = os.environ.get("BIOSTREAM_GATEWAY_KEY")
    if not key:
        raise SystemExit("BIOSTREAM_GATEWAY_KEY is not set: `source stores/dev-keys.env` (made by `make serve`)")
    random.seed(7)
    now = int(time.time())
    send(args.url, key, args.bed, now - 500, 300)  # five calm minutes
    opened = send(args.url, key, args.bed, now - 200, 200, map=52, sbp=78, dbp=40)
    print(json.dumps(opened, indent=1))


if __name__ == "__main__":
    main()
