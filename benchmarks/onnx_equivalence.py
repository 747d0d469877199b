"""The ONNX Runtime capture backend against the torch model (issue 16): the largest code and 68-landmark differences
on SynthREX renders (held-out subjects, all five views) and on real clips' crops, both run through the front end as a
capture runs them, and each backend's ms per frame on those crops with one thread (the engine's thread count here).

    python benchmarks/onnx_equivalence.py [--synthrex-subjects 2] [--synthrex-frames 30] [--clip-frames 60]

Prints one JSON object. SynthREX frames come from its cache (`serep synthrex` makes it); without it that part is null.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from serep_engine.capture.model import CaptureModel
from serep_engine.capture.runtime import ONNX_NAME, OnnxCaptureModel
from serep_engine.device import thread_count
from serep_engine.paths import data_dir
from serep_engine.track.frontend import LiveFrontEnd
from serep_engine.track.video import read_frames

WEIGHTS = Path(__file__).resolve().parents[1] / "serep_engine" / "weights"
CLIPS = ("May_5s.mp4", "obama.mp4", "dafoe.mp4", "liveportrait_d18.mp4")


def front_end_crops(frames, fps: float = 30.0) -> tuple[list, list]:
    live = LiveFrontEnd(fps, 256)
    try:
        found = [f for f in (live(rgb, i) for i, rgb in enumerate(frames)) if f.found]
    finally:
        live.close()
    return [f.crop for f in found], [f.crop_landmarks for f in found]


def synthrex_crops(subjects: int, frames: int) -> tuple[list, list] | None:
    from serep_engine.eval.synthrex import VIEW_GROUPS, view_frames

    crops, landmarks = [], []
    try:
        for subject in range(subjects):
            for yaw in sorted({y for group in VIEW_GROUPS.values() for y in group}):
                c, m = front_end_crops(view_frames(subject, yaw)[:frames])
                crops += c
                landmarks += m
    except FileNotFoundError:
        return None
    return crops, landmarks


def clip_crops(frames: int) -> tuple[list, list]:
    crops, landmarks = [], []
    for name in CLIPS:
        c, m = front_end_crops(rgb for _, rgb in read_frames(data_dir() / "real" / "videos" / name, 0, frames))
        crops += c
        landmarks += m
    return crops, landmarks


def differences(models: dict, crops: list, landmarks: list) -> dict:
    (codes, points), (torch_codes, torch_points) = (m.predict(crops, landmarks) for m in models.values())
    return {"crops": len(crops), "max_code_diff": float(np.abs(codes - torch_codes).max()),
            "max_code": float(np.abs(torch_codes).max()),
            "max_landmark_diff_px": float(np.abs(points - torch_points).max())}


def ms_per_frame(model, crops: list, landmarks: list, batch: int, seconds: float = 3.0) -> float:
    """predict (preprocessing included) on batches of the crops, after a warm-up."""
    model.predict(crops[:batch], landmarks[:batch])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        first = done % max(len(crops) - batch, 1)
        model.predict(crops[first:first + batch], landmarks[first:first + batch])
        done += batch
    return 1000 * (time.perf_counter() - started) / done


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthrex-subjects", type=int, default=2)
    parser.add_argument("--synthrex-frames", type=int, default=30, help="first frames of each view")
    parser.add_argument("--clip-frames", type=int, default=60, help="first frames of each real clip")
    args = parser.parse_args()
    threads = thread_count()
    torch.set_num_threads(threads)
    models = {"onnx": OnnxCaptureModel.from_pretrained(), "torch": CaptureModel.from_pretrained("cpu")}
    rendered = synthrex_crops(args.synthrex_subjects, args.synthrex_frames)
    real = clip_crops(args.clip_frames)
    # the real crops with every other frame's landmarks removed: the graph's missing-landmark path
    holes = [np.full_like(m, np.nan) if i % 2 else m for i, m in enumerate(real[1])]
    speed = {name: {f"batch_{batch}": round(ms_per_frame(model, *real, batch), 2) for batch in (1, 16)}
             for name, model in models.items()}
    print(json.dumps({"synthrex": None if rendered is None else differences(models, *rendered),
                      "real_clips": differences(models, *real), "real_clips_landmarks_missing":
                      differences(models, real[0], holes), "ms_per_frame": speed, "threads": threads,
                      "onnx_mib": round((WEIGHTS / ONNX_NAME).stat().st_size / 2**20, 2)}))


if __name__ == "__main__":
    main()
