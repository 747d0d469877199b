"""What an ARKit rig gets, against what the tracker itself reads, on the real clips.

For each clip, `Engine.capture(..., arkit=True)` (the product's path: codes refined against the landmarks unless
`--no-follow-landmarks`, smoothed, ARKit weights solved from the decoded face, gaze taken from the tracker) keeps
both its ARKit weights and the Face Landmarker's own 52 scores (`tracker_blendshapes`). Per shape (the 43 solved
from the face: no gaze, no tongueOut): the Pearson correlation of the two over the clip's frames with a face, and
the mean difference (ours - tracker's); mean over clips. Also the median over frames of the sum of all 43 weights,
ours and the tracker's: a face at rest should sum to little, and constant activation shows here.

The tracker's scores are a reference, not the truth (they under-read winks and read closed eyes as looking down);
`serep eval real` is the benchmark. This says where the two disagree, shape by shape.

    python benchmarks/arkit_vs_tracker.py [--clips 0] [--frames 150] [--no-follow-landmarks]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=0, help="first N clips (0 = all)")
    parser.add_argument("--frames", type=int, default=150, help="frames per clip from the start")
    parser.add_argument("--no-follow-landmarks", dest="follow_landmarks", action="store_false")
    args = parser.parse_args()

    from serep_engine.contract import VIDEO_SUFFIXES
    from serep_engine.engine import CaptureOptions, Engine
    from serep_engine.paths import data_dir
    from serep_engine.retarget.arkit import GAZE

    engine = Engine.from_pretrained("cpu")
    options = CaptureOptions(arkit=True, follow_landmarks=args.follow_landmarks)
    clips = sorted(p for p in (data_dir() / "real" / "videos").iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    corrs, biases, ours_sum, theirs_sum, shapes = [], [], [], [], None
    for clip in clips[:args.clips or None]:
        try:
            result = engine.capture(clip, 0, args.frames, None, options)
        except ValueError as error:  # a clip without a face
            print(f"{clip.name}: skipped ({error})", file=sys.stderr)
            continue
        names = [str(n) for n in result.arkit_names]
        tracker = [str(n) for n in result.tracker_blendshape_names]
        shapes = [n for n in names if n not in GAZE and n in tracker]
        found = result.face_found
        ours = result.arkit_weights[found][:, [names.index(n) for n in shapes]]
        theirs = result.tracker_blendshapes[found][:, [tracker.index(n) for n in shapes]]
        corrs.append([np.corrcoef(a, b)[0, 1] if a.std() > 1e-6 and b.std() > 1e-6 else np.nan
                      for a, b in zip(ours.T, theirs.T)])
        biases.append(ours.mean(0) - theirs.mean(0))
        ours_sum.append(float(np.median(ours.sum(1))))
        theirs_sum.append(float(np.median(theirs.sum(1))))
    if shapes is None:
        print("no clip with a face", file=sys.stderr)
        return 1
    corr, bias = np.nanmean(np.array(corrs), 0), np.mean(np.array(biases), 0)
    print(json.dumps({"clips": len(corrs), "follow_landmarks": args.follow_landmarks,
                      "mean_corr": round(float(np.nanmean(corr)), 3),
                      "mean_abs_bias": round(float(np.abs(bias).mean()), 3),
                      "median_weight_sum": {"ours": round(float(np.mean(ours_sum)), 2),
                                            "tracker": round(float(np.mean(theirs_sum)), 2)},
                      "shapes": {n: {"corr": round(float(c), 3), "bias": round(float(b), 3)}
                                 for n, c, b in zip(shapes, corr, bias)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
