"""How the per-clip costs grow: basis compression (serep_engine/shapekeys/basis.py) with frames F, target vertices V and
keys K, and the add-on's Blender bake (benchmarks/bench_bake.py, child processes) with V and K. Time with clip
length end to end: benchmarks/bench_memory.py. Each row: median seconds of `--repeats`; then a summary line
with the growth exponent between the smallest and largest size (1 = linear).

    .venv/bin/python benchmarks/bench_scaling.py [--repeats 3] [--no-blender]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from serep_engine.bench import blender_bake
from serep_engine.shapekeys.basis import compress


def take(frames: int, vertices: int, keys: int, seed: int = 0):
    """Keys falling off in size (as decoded expression bases do), slowly varying weights, a still third of the
    mesh (the back of the head); tolerance 0.005 as in the engine."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(keys, vertices, 3)) * np.exp(-np.arange(keys) / 8)[:, None, None] * 0.05
    basis[:, : vertices // 3] = 0.0
    t = np.linspace(0, frames / 30, frames)[:, None]
    weights = np.sin(t * rng.uniform(0.5, 4.0, keys) + rng.uniform(0, 6, keys)) + 0.05 * rng.normal(size=(frames, keys))
    return basis.astype(np.float32), weights.astype(np.float32)


def timed(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def exponent(sizes, seconds) -> float:
    return round(math.log(seconds[-1] / seconds[0]) / math.log(sizes[-1] / sizes[0]), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-blender", action="store_true")
    args = parser.parse_args()
    summary = {"load_average": round(os.getloadavg()[0], 2)}
    sweeps = {"frames": ([1000, 4000, 16000], lambda n: (n, 20000, 64)),
              "vertices": ([5000, 20000, 80000], lambda n: (1000, n, 64)),
              "keys": ([16, 32, 64], lambda n: (1000, 20000, n))}
    with threadpool_limits(1, "blas"):  # as the engine runs it on a 2-core machine (engine_threads)
        for name, (sizes, shape) in sweeps.items():
            seconds = []
            for size in sizes:
                basis, weights = take(*shape(size))
                seconds.append(timed(lambda: compress(basis, weights, 0.005), args.repeats))
                print(json.dumps({"stage": "compress", "frames": shape(size)[0], "vertices": shape(size)[1],
                                  "keys": shape(size)[2], "median_s": round(seconds[-1], 3)}), flush=True)
            summary[f"compress_vs_{name}"] = {"sizes": sizes, "seconds": [round(s, 3) for s in seconds],
                                              "exponent": exponent(sizes, seconds)}
    if not args.no_blender:
        for name, sizes, make in (("vertices", [5000, 20000, 80000], lambda n: dict(vertices=n, keys=64)),
                                  ("keys", [16, 64, 128], lambda n: dict(vertices=20000, keys=n))):
            seconds = [blender_bake(frames=1000, repeat=args.repeats, **make(size)) for size in sizes]
            for size, s in zip(sizes, seconds):
                print(json.dumps({"stage": "blender_bake", "frames": 1000, **make(size), "median_s": s}), flush=True)
            if all(seconds):
                summary[f"blender_bake_vs_{name}"] = {"sizes": sizes, "seconds": seconds,
                                                      "exponent": exponent(sizes, seconds)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
