"""Jitter of captured codes on the real clips, with and without the temporal filter.

For each clip: track it with the shipped capture model, find its stillest second (the window of one
second whose tracked landmarks move least), and report the mean frame-to-frame change of the decoded
template mesh there (region-weighted RMS per vertex, mm, the metric of training) for the raw codes and
for the filtered ones (the engine's default smoothing).

    python benchmarks/capture_jitter.py [--clips 22] [--frames 300] [--no-follow-landmarks]

(`--no-follow-landmarks`: the network's codes alone, without the refinement against mediapipe's landmarks.)
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=0, help="first N clips (0 = all)")
    parser.add_argument("--frames", type=int, default=300, help="frames per clip from the start")
    parser.add_argument("--no-follow-landmarks", dest="follow_landmarks", action="store_false")
    args = parser.parse_args()

    from serep_engine.capture.train import region_gram
    from serep_engine.engine import CaptureOptions, Engine
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.track.filters import fill_gaps, smooth_codes
    from serep_engine.paths import data_dir

    engine = Engine.from_pretrained("cpu")
    gram = region_gram(ExpressionModel.from_pretrained("cpu", engine.face_model), engine.face_model).double().numpy()

    def change_mm(codes: np.ndarray) -> float:
        steps = np.diff(codes.astype(np.float64), axis=0)
        return float(np.sqrt(np.einsum("bi,ij,bj->b", steps, gram, steps)).mean() * 10)

    rows = {}
    clips = sorted((data_dir() / "real" / "videos").glob("*.mp4"))[: args.clips or None]
    for clip in clips:
        tracked = engine.track(clip, 0, args.frames, CaptureOptions(follow_landmarks=args.follow_landmarks))
        found, fps = tracked["face_found"], tracked["fps"]
        window = int(round(fps))
        if found.sum() < window + 1:
            continue
        raw = fill_gaps(tracked["codes_raw"], found)
        smooth = smooth_codes(raw, fps, 1.0, found)
        motion = np.linalg.norm(np.diff(tracked["landmarks2d"], axis=0), axis=2).mean(1)  # pixels per frame
        motion = np.where(np.isfinite(motion), motion, np.inf)
        scores = [motion[s:s + window].mean() if found[s:s + window + 1].all() else np.inf
                  for s in range(len(motion) - window + 1)]
        start = int(np.argmin(scores))
        still = slice(start, start + window + 1)
        rows[clip.name] = {"raw_mm_per_frame": round(change_mm(raw[still]), 4),
                           "filtered_mm_per_frame": round(change_mm(smooth[still]), 4),
                           "stillest_second_starts": start, "landmark_motion_px": round(float(scores[start]), 3),
                           "face_found": round(float(found.mean()), 3)}
        print(json.dumps({"clip": clip.name, **rows[clip.name]}), file=sys.stderr, flush=True)
    raw_mean = float(np.mean([r["raw_mm_per_frame"] for r in rows.values()]))
    filtered_mean = float(np.mean([r["filtered_mm_per_frame"] for r in rows.values()]))
    print(json.dumps({"clips": rows, "raw_mean_mm_per_frame": round(raw_mean, 4),
                      "filtered_mean_mm_per_frame": round(filtered_mean, 4), "torch_threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
