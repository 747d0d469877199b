"""Memory and time as a clip grows: a clip concatenated with itself 1x, 4x, 16x (re-encoded, mp4v), each
captured by `Engine.capture` onto the bench's 45k-vertex target in a fresh child process that reports its
peak resident memory. Flat memory = streaming, no whole-clip buffers; seconds per frame flat = linear time.

    .venv/bin/python benchmarks/bench_memory.py [--clip skarsgard.mp4] [--repeats 1 4 16] [--weights DIR]

Prints one JSON line per length, then a summary line (the last line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2


def concatenate(clip: Path, times: int, out: Path) -> Path:
    from serep_engine.track.video import probe, read_frames

    info = probe(clip)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, (info.width, info.height))
    for _ in range(times):
        for _, rgb in read_frames(clip):
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return out


def child(clip: Path, weights: Path | None) -> None:
    """One capture in this process; prints frames, seconds and this process's peak RSS."""
    from serep_engine.bench import bench_target, peak_rss_mb
    from serep_engine.capture.model import CaptureModel
    from serep_engine.engine import Engine
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel

    if weights is None:
        engine = Engine.from_pretrained("cpu")
    else:
        face_model = ICTModel.load()
        capture_model = CaptureModel.load(weights, device="cpu")
        engine = Engine(face_model, ExpressionModel.from_pretrained("cpu", face_model), capture_model,
                        capture_model.device)
    target = bench_target(engine.face_model)
    before = peak_rss_mb()
    started = time.perf_counter()
    result = engine.capture(clip, target=target)
    seconds = time.perf_counter() - started
    print(json.dumps({"frames": result.n_frames, "seconds": round(seconds, 2),
                      "ms_per_frame": round(1000 * seconds / result.n_frames, 2),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_capture_mb": round(before, 1),
                      "keys": len(result.basis)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default="skarsgard.mp4", help="a clip of the shared data's real/videos, or a path")
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--weights", type=Path, default=None, help="capture model folder (default: the shipped one)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.weights)
        return
    from serep_engine.paths import data_dir

    clip = Path(args.clip) if Path(args.clip).exists() else data_dir() / "real" / "videos" / args.clip
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for times in args.repeats:
            long_clip = concatenate(clip, times, Path(folder) / f"x{times}.mp4")
            command = [sys.executable, __file__, "--child", str(long_clip)]
            if args.weights is not None:
                command += ["--weights", str(args.weights)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = {"clip": clip.name, "times": times, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            rows.append(row)
            long_clip.unlink()
    print(json.dumps({"clip": clip.name, "load_average": round(os.getloadavg()[0], 2),
                      "frames": [r["frames"] for r in rows], "peak_rss_mb": [r["peak_rss_mb"] for r in rows],
                      "ms_per_frame": [r["ms_per_frame"] for r in rows]}))


if __name__ == "__main__":
    main()
