"""How often the tracker keeps the face on SynthREX's views: the share of frames with a face, per view, for the
tracker as the capture runs it (VIDEO mode, one face followed, lost faces looked for again) and, for comparison,
the Landmarker reading every frame on its own (IMAGE mode, what the tracker did before following faces).

    python benchmarks/tracker_coverage.py [--subjects 8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from serep_engine.eval.synthrex import N_SUBJECTS, VIEW_GROUPS, view_frames
from serep_engine.track.tracking import FaceTracker


def coverage(frames: np.ndarray, video: bool) -> float:
    with FaceTracker(video=video, max_faces=1 if not video else 2) as tracker:
        return float(np.mean([tracker.track(frame).found for frame in frames]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=N_SUBJECTS)
    args = parser.parse_args()
    out = {}
    for mode, video in (("tracked", True), ("frame_by_frame", False)):
        for group, yaws in VIEW_GROUPS.items():
            found = [coverage(view_frames(s, yaw), video) for s in range(args.subjects) for yaw in yaws]
            out[f"{mode}_{group}"] = round(float(np.mean(found)), 3)
            out[f"{mode}_{group}_worst_video"] = round(float(np.min(found)), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
