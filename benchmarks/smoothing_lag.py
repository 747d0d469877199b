"""Lag and smoothness of the codes' temporal smoothing on the real clips.

For each clip (its first 150 frames): the capture as the product runs it (`eval/baselines.py: serep_codes`, the
network's codes refined against mediapipe's landmarks), decoded on the template, and three ways to smooth its codes:
none, the One Euro filter run forward only (as a live stream must), and the engine's `smooth_codes` (forward and
backward, averaged). Per way, per measure (lip gap and both eye openings, `eval/real.py`'s measures of the decoded
mesh against mediapipe's points in the face's frame, each as a change from the clip's median):
- `lag`: the shift in frames (-3..3) at which the captured measure best correlates with mediapipe's (> 0: late);
- `corr`: the correlation at no shift;
- `roughness`: mean absolute frame-to-frame change of the captured measure over that of mediapipe's own measure
  after a zero-phase Gaussian (sigma one frame), i.e. how much frame-to-frame jitter is left, 1 = as smooth as that.
Means over clips; one JSON line.

    python benchmarks/smoothing_lag.py [--clips DIR] [--frames 150] [--strength 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

SHIFTS = range(-3, 4)
MEASURES = ("lip_gap", "eye_left", "eye_right")


def best_shift(captured: np.ndarray, observed: np.ndarray) -> int:
    edge = max(SHIFTS)
    scores = [np.corrcoef(np.roll(captured, -shift)[edge:-edge], observed[edge:-edge])[0, 1] for shift in SHIFTS]
    return list(SHIFTS)[int(np.nanargmax(scores))]


def gaussian(values: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    kernel = np.exp(-0.5 * (np.arange(-3, 4) / sigma) ** 2)
    return np.convolve(np.pad(values, 3, mode="edge"), kernel / kernel.sum(), "valid")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", default=None, help="folder of clips (default: the real clips)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--strength", type=float, default=1.0, help="the smoothing setting (the engine's default 1)")
    args = parser.parse_args()
    if args.strength <= 0:
        parser.error("--strength must be above 0 (at 0 all three ways are the same)")

    from pathlib import Path

    from serep_engine.contract import VIDEO_SUFFIXES
    from serep_engine.eval.baselines import serep_codes
    from serep_engine.eval.real import default_clips, expression_measures, track_clip
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.track.filters import fill_gaps, one_euro_pass, smooth_codes

    face_model = ICTModel.load()
    codes_of = serep_codes(face_model)
    neutral = face_model.face_neutral
    smoothers = {"none": lambda c, f: c,
                 "forward": lambda c, f: one_euro_pass(c, 30.0, args.strength, f),
                 "shipped": lambda c, f: smooth_codes(c, 30.0, args.strength, f)}
    rows: dict[str, list] = {name: [] for name in smoothers}
    folder = Path(args.clips) if args.clips else default_clips()
    for clip in sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        tracked = track_clip(clip, args.frames)
        if len(tracked["measures"]) < 20:
            continue
        captured = codes_of(tracked["frames"], neutral)
        codes, found, basis = captured["codes"], captured["found"], captured["basis"]
        codes = fill_gaps(codes, found)
        observed = {measure: (v := np.array([m[measure] for m in tracked["measures"]])) - np.median(v)
                    for measure in MEASURES}
        for name, smooth in smoothers.items():
            meshes = neutral[None] + np.tensordot(smooth(codes, found), basis, axes=1)
            captured = [expression_measures(m[face_model.landmarks68, :2], np.array([0.0, 1.0])) for m in meshes]
            row = {}
            for measure in MEASURES:
                ours, theirs = np.array([c[measure] for c in captured]), observed[measure]
                ours = ours - np.median(ours)
                if ours.std() < 1e-9 or theirs.std() < 1e-9:
                    continue
                row[measure] = (best_shift(ours, theirs), np.corrcoef(ours, theirs)[0, 1],
                                np.abs(np.diff(ours)).mean() / np.abs(np.diff(gaussian(theirs))).mean())
            rows[name].append(row)
        print(f"{clip.name}: {len(codes)} frames", file=sys.stderr)
    out = {"clips": len(rows["none"]), "strength": args.strength}
    for name, clip_rows in rows.items():
        out[name] = {}
        for measure in MEASURES:
            values = np.array([r[measure] for r in clip_rows if measure in r])
            out[name][measure] = dict(zip(("lag", "corr", "roughness"), np.round(values.mean(0), 3).tolist()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
