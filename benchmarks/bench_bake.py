"""Bake speed of the Blender add-on: a result of F frames x K keys onto a V-vertex mesh, in real Blender
(the bpy module). Target: BASIS mode, 1000 frames x 20k vertices in <= 2 s. Prints one JSON line.

    python benchmarks/bench_bake.py [--frames 1000] [--vertices 20000] [--keys 32] [--repeat 5] [--per-frame]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

from serep_blender import bake


def grid_mesh(vertices: int):
    """A square grid of about `vertices` vertices (a stand-in for a dense head: only the count matters)."""
    side = int(round(vertices ** 0.5))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side - 1, y_subdivisions=side - 1, size=0.3)
    return bpy.context.object


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--vertices", type=int, default=20000)
    parser.add_argument("--keys", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--per-frame", action="store_true", help="also time PER_FRAME mode (one key per frame)")
    args = parser.parse_args()
    obj = grid_mesh(args.vertices)
    n = len(obj.data.vertices)
    rng = np.random.default_rng(0)
    arrays = dict(frames=np.arange(args.frames), fps=np.float64(30.0), face_found=np.ones(args.frames, bool),
                  codes=rng.normal(size=(args.frames, 64)).astype(np.float32),
                  head_pose=np.tile(np.array([0.1, 0.2, 0.0, 0.0, 0.0, 60.0], np.float32), (args.frames, 1)),
                  basis=rng.normal(scale=1e-3, size=(args.keys, n, 3)).astype(np.float32),
                  weights=rng.normal(size=(args.frames, args.keys)).astype(np.float32))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "take.npz"
        np.savez(path, **arrays)
        started = time.perf_counter()
        result = bake.load_result(path)
        load_seconds = time.perf_counter() - started
    report = {"frames": args.frames, "vertices": n, "keys": args.keys, "load_s": round(load_seconds, 3)}
    for mode, repeat in [("BASIS", args.repeat)] + ([("PER_FRAME", 1)] if args.per_frame else []):
        times = []
        for _ in range(repeat):  # each bake replaces the previous one, as a re-bake does
            started = time.perf_counter()
            bake.bake(obj, result, "take", mode, head="OBJECT")
            times.append(time.perf_counter() - started)
        report[f"{mode.lower()}_median_s"] = round(statistics.median(times), 3)
        report[f"{mode.lower()}_runs_s"] = [round(t, 3) for t in times]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
