"""Neutral calibration on real clips: for each clip, the most neutral quarter second found by `tune.find_neutral`,
and how far its frames' meshes are from the template's neutral before and after calibration (mm, mean over the
face's vertices; per frame, then the largest over the window). The window's mean code is subtracted, so what
is left on its frames is the capture's frame-to-frame variation there. Prints one JSON line per clip, then a
summary.

    python benchmarks/bench_calibration.py [--clips N] [--frames 300] [--smoothing 1.0] [--seconds 0.25]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from serep_engine.engine import CaptureOptions, Engine
from serep_engine.facemodel.regions import NARROW_FACE_VERTEX_COUNT
from serep_engine.paths import data_dir
from serep_engine.tune import Tuning, find_neutral, frame_displacement, retune


def window_mm(result, codes, rows) -> list[float]:
    face = slice(0, NARROW_FACE_VERTEX_COUNT)
    return [float(10 * np.linalg.norm(frame_displacement(result, codes, row)[face], axis=1).mean()) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--smoothing", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=0.25, help="length of the neutral stretch found")
    args = parser.parse_args()
    engine = Engine.from_pretrained("cpu")
    clips = sorted((data_dir() / "real" / "videos").glob("*.mp4"))[: args.clips]
    rows_out = []
    for clip in clips:
        result = engine.capture(clip, 0, args.frames, options=CaptureOptions(smoothing=0.0, rebake=True))
        start, end = find_neutral(result, args.seconds)
        rows = np.flatnonzero((result.frames >= start) & (result.frames < end))
        before = retune(result, Tuning(smoothing=args.smoothing), codes_only=True).codes
        after = retune(result, Tuning(smoothing=args.smoothing, neutral=(start, end)), codes_only=True).codes
        row = {"clip": clip.name, "neutral": [start, end],
               "before_mm_max": round(max(window_mm(result, before, rows)), 4),
               "after_mm_max": round(max(window_mm(result, after, rows)), 4),
               "after_mm_mean": round(float(np.mean(window_mm(result, after, rows))), 4),
               "window_mean_mm": round(window_mm(result, after[rows].mean(0, keepdims=True), [0])[0], 6)}
        rows_out.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"clips": len(rows_out), "smoothing": args.smoothing,
                      "after_mm_max_median": float(np.median([r["after_mm_max"] for r in rows_out])),
                      "after_mm_max_worst": max(r["after_mm_max"] for r in rows_out),
                      "before_mm_max_median": float(np.median([r["before_mm_max"] for r in rows_out]))}))


if __name__ == "__main__":
    main()
