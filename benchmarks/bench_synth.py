"""Synthetic-set speed: samples per second of `serep synth` (256x256 crops) on this machine.

    .venv/bin/python benchmarks/bench_synth.py [--n 1024] [--workers N]

Prints one JSON line. Each worker pays a start-up (model load, GL context, first identity basis), so
the rate is reported both overall and for the steady state (the larger run minus a small one)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from serep_engine.paths import data_dir
from serep_engine.synth.shards import write_synthetic_set


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    videos = sorted((data_dir() / "real" / "videos").glob("*.mp4"))
    with tempfile.TemporaryDirectory() as tmp:
        small = write_synthetic_set(args.workers * 32, Path(tmp) / "small", shard_size=32, workers=args.workers,
                                    videos=videos, log=lambda _: None)
        large = write_synthetic_set(args.n, Path(tmp) / "large", shard_size=args.n // args.workers,
                                    workers=args.workers, videos=videos, log=lambda _: None)
    steady = (large["n"] - small["n"]) / max(large["seconds"] - small["seconds"], 1e-9)
    print(json.dumps({"samples_per_second": large["samples_per_second"], "steady_samples_per_second": round(steady, 1),
                      "n": large["n"], "seconds": large["seconds"], "workers": args.workers, "crop": 256}))


if __name__ == "__main__":
    main()
