"""`serep bench --json`: how fast the whole path runs, stage by stage, and how much memory it takes.

The last stdout line (**contract**, issue 7):
    {"e2e_fps_720p": f, "realtime_factor_720p": r, "e2e_fps_1080p": f, "peak_rss_mb": m,
     "bake_s_1000f_20kv": s, "stages_ms": {...}, "device": "cpu"|"cuda", "cores": n, ...}

- e2e: `Engine.capture` of the whole clip onto a real target mesh (a held-out ICT head, midpoint-subdivided to
  about 45k vertices, in metres), models loaded, the mesh's registration and decoded identity basis cached (as
  for every clip after the first on one character; both timed apart in `per_clip_s`, the first run in
  `clips.*.first_run_s`); the median of `--repeats` runs. realtime_factor = processed fps / clip fps.
- stages_ms: each stage run alone, one after the other, on the 720p clip, per frame. Per-clip work (the
  identity's decoded basis, its transfer to the target, the basis compression) is divided by the clip's frames;
  `per_clip_s` has it whole.
- bake_s_1000f_20kv: the add-on's BASIS bake of 1000 frames x 64 keys onto a 20k-vertex mesh in Blender
  (benchmarks/bench_bake.py in a child process with the bpy module; null where bpy or the script is missing).
- model_fps_batched: the capture model alone on batches already on the device (mixed precision on CUDA with
  torch); `backend` says what ran it (torch or ONNX Runtime, `--backend`). The ONNX graph averages each frame with
  its mirror image, as `predict` does (twice the network's work); torch's number is the network alone, once.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from serep_engine.paths import data_dir

CLIPS = {"720p": "obama.mp4", "1080p": "skarsgard.mp4"}
BAKE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bake.py"


def default_clip(label: str) -> Path:
    return data_dir() / "real" / "videos" / CLIPS[label]


def peak_rss_mb() -> float:
    """This process's peak resident memory (ru_maxrss is kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def bench_target(face_model):
    """A held-out ICT head and neck (never in training), midpoint-subdivided (about 45k vertices), in metres:
    a mesh the engine has to fit for real, as it would an artist's."""
    from serep_engine.engine import TargetMesh
    from serep_engine.eval.retarget import HEAD_POLYGONS, HEAD_VERTICES, subdivide
    from serep_engine.facemodel.ict import quads_to_triangles
    from serep_engine.facemodel.identities import eval_identity

    head = face_model.identity_neutral(eval_identity(face_model, 20), face_only=False)[:HEAD_VERTICES]
    vertices, triangles, _ = subdivide(head.astype(np.float64), quads_to_triangles(face_model.polygons[:HEAD_POLYGONS]))
    return TargetMesh(0.01 * vertices, triangles)


class _TimedTracker:
    """Wraps a FaceTracker to add the time spent in `track` to times["tracking"]."""

    def __init__(self, tracker, times: dict):
        self.tracker, self.times = tracker, times

    def track(self, rgb):
        started = time.perf_counter()
        observation = self.tracker.track(rgb)
        self.times["tracking"] += time.perf_counter() - started
        return observation

    def close(self) -> None:
        self.tracker.close()


def stage_times(engine, clip: Path, target, options, max_frames: int | None = None) -> tuple[dict, dict]:
    """Each stage alone, in the order the data flows: (ms per frame, seconds of the per-clip stages)."""
    from serep_engine.engine import engine_threads
    from serep_engine.track.filters import fill_gaps, smooth_codes
    from serep_engine.retarget import fit_target
    from serep_engine.shapekeys.basis import compress
    from serep_engine.track.frontend import LiveFrontEnd
    from serep_engine.track.pose import HeadPoseEstimator
    from serep_engine.track.video import probe, read_frames

    info = probe(clip)
    times: dict = defaultdict(float)
    live = LiveFrontEnd(info.fps, engine.capture_model.crop_size)
    live.tracker = _TimedTracker(live.tracker, times)
    pose = HeadPoseEstimator(engine.face_model)
    crops, marks, count = [], [], 0
    frames = read_frames(clip, 0, max_frames)
    while True:
        started = time.perf_counter()
        item = next(frames, None)
        times["decode"] += time.perf_counter() - started
        if item is None:
            break
        count += 1
        started = time.perf_counter()
        frame = live(item[1], item[0])
        times["crop"] += time.perf_counter() - started  # tracking is taken off below
        if frame.found:
            crops.append(frame.crop)
            marks.append(frame.crop_landmarks)
            started = time.perf_counter()
            pose(frame.landmarks, (info.height, info.width))
            times["head_pose"] += time.perf_counter() - started
    live.close()
    times["crop"] -= times["tracking"]
    if not crops:
        raise ValueError(f"no face found in {clip.name}: nothing to time after tracking")
    codes = []
    with engine_threads():
        started = time.perf_counter()
        for first in range(0, len(crops), options.batch_size):
            codes.append(engine.capture_model.predict(crops[first:first + options.batch_size],
                                                      marks[first:first + options.batch_size])[0])
        times["e_img"] = time.perf_counter() - started
    raw = np.concatenate(codes)
    per_clip = {}
    started = time.perf_counter()
    registration = fit_target(engine.face_model, target.vertices, target.triangles)
    per_clip["fit_target_s"] = time.perf_counter() - started  # a cache hit after the first run on a mesh
    started = time.perf_counter()
    found = np.ones(len(raw), bool)
    smoothed = smooth_codes(fill_gaps(raw, found), info.fps, options.smoothing, found)
    per_clip["smooth_s"] = time.perf_counter() - started
    started = time.perf_counter()
    template_basis = engine.expression_model.identity_basis(registration.neutral)
    per_clip["dmesh_decode_s"] = time.perf_counter() - started
    started = time.perf_counter()
    user_basis = registration.to_user(template_basis)
    per_clip["transfer_s"] = time.perf_counter() - started
    started = time.perf_counter()
    compress(user_basis, smoothed, options.tolerance_cm * registration.scale_to_user, options.max_keys)
    per_clip["compress_s"] = time.perf_counter() - started
    for name in ("dmesh_decode", "transfer", "compress"):
        times[name] = per_clip[f"{name}_s"]
    stages = {name: round(1000 * times[name] / count, 3) for name in
              ("decode", "tracking", "crop", "head_pose", "e_img", "dmesh_decode", "transfer", "compress")}
    stages["frames"] = count
    return stages, {k: round(v, 3) for k, v in per_clip.items()}


def end_to_end(engine, clip: Path, target, options, repeats: int, max_frames: int | None = None) -> dict:
    """`Engine.capture` of the clip onto the target: median fps over `repeats` runs after a warm-up run."""
    from serep_engine.track.video import probe

    info = probe(clip)
    started = time.perf_counter()  # the first run: lazy imports, and the target's fit if not cached yet
    engine.capture(clip, 0, max_frames, target, options)
    first_s = time.perf_counter() - started
    seconds, frames = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        result = engine.capture(clip, 0, max_frames, target, options)
        seconds.append(time.perf_counter() - started)
        frames = result.n_frames
    fps = frames / statistics.median(seconds)
    return {"clip": clip.name, "width": info.width, "height": info.height, "clip_fps": round(info.fps, 3),
            "frames": frames, "fps": round(fps, 2), "realtime_factor": round(fps / info.fps, 3),
            "runs_s": [round(s, 3) for s in seconds], "first_run_s": round(first_s, 3)}


def model_throughput(capture_model, batch: int, seconds: float = 3.0) -> float:
    """Frames per second of the capture network alone on batches already on its device (fp16 autocast and
    channels-last on CUDA with torch), after a warm-up."""
    if capture_model.backend == "onnx":
        return _onnx_throughput(capture_model, batch, seconds)
    import torch

    config, device = capture_model.config, capture_model.device
    net = capture_model.net
    images = torch.rand(batch, 3, config.source_size, config.source_size, device=device)
    points = torch.rand(batch, 478, 2, device=device) * 2 - 1
    cuda = device.type == "cuda"
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    done, elapsed = 0, 0.0
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
        for _ in range(3):
            net(images, points)
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        while elapsed < seconds:
            net(images, points)
            if cuda:
                torch.cuda.synchronize()
            done += batch
            elapsed = time.perf_counter() - started
    if cuda:
        capture_model.net.to(memory_format=torch.contiguous_format)
    return done / elapsed


def _onnx_throughput(capture_model, batch: int, seconds: float) -> float:
    size = capture_model.config.source_size
    rng = np.random.default_rng(0)
    inputs = {"images": rng.random((batch, 3, size, size), dtype=np.float32),
              "points": rng.uniform(-1, 1, (batch, 478, 2)).astype(np.float32)}
    for _ in range(3):
        capture_model.session.run(None, inputs)
    done, elapsed, started = 0, 0.0, time.perf_counter()
    while elapsed < seconds:
        capture_model.session.run(None, inputs)
        done += batch
        elapsed = time.perf_counter() - started
    return done / elapsed


def blender_bake(frames: int = 1000, vertices: int = 20000, keys: int = 64, repeat: int = 3,
                 log=None) -> float | None:
    """Median seconds of the add-on's BASIS bake in real Blender (a child process), None where it cannot run."""
    if not BAKE_SCRIPT.exists():
        return None
    command = [sys.executable, str(BAKE_SCRIPT), "--frames", str(frames), "--vertices", str(vertices),
               "--keys", str(keys), "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=BAKE_SCRIPT.parents[1])
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        if log is not None:
            log(f"bench: the Blender bake benchmark did not run: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return json.loads(lines[-1])["basis_median_s"]


def run_bench(device: str = "auto", clip_720p: Path | None = None, clip_1080p: Path | None = None,
              repeats: int = 3, max_frames: int | None = None, weights: Path | None = None,
              bake: bool = True, track_workers: int | None = None, log=None, backend: str = "auto") -> dict:
    from serep_engine.device import pick_backend
    from serep_engine.engine import CaptureOptions, Engine, engine_threads
    from serep_engine.expression.decoder import ExpressionDecoder
    from serep_engine.facemodel.ict import ICTModel

    log = log or (lambda message: None)
    clips = {"720p": Path(clip_720p or default_clip("720p")), "1080p": Path(clip_1080p or default_clip("1080p"))}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    if weights is None:
        engine = Engine.from_pretrained(device, backend=backend)
    else:  # as from_pretrained, with another capture model: torch's unless --backend onnx (its capture_model.onnx)
        backend, chosen = pick_backend(device, "torch" if backend == "auto" else backend)
        if backend == "onnx":
            from serep_engine.capture.runtime import OnnxCaptureModel as Model
        else:
            from serep_engine.capture.model import CaptureModel as Model
        face_model = ICTModel.load()
        engine = Engine(face_model, ExpressionDecoder.from_pretrained(face_model), Model.load(weights, device=chosen),
                        chosen)
    load_s = time.perf_counter() - started
    target = bench_target(engine.face_model)
    if track_workers is None:  # on a GPU machine the CPU cores track chunks in parallel; a laptop uses threads
        track_workers = 1 if engine.device == "cpu" else max(1, (os.cpu_count() or 1) // 2)
    options = CaptureOptions(track_workers=track_workers)
    log(f"bench: target mesh {len(target.vertices)} vertices; stages on {clips['720p'].name}")
    stages, per_clip = stage_times(engine, clips["720p"], target, options, max_frames)
    per_clip["load_models_s"] = round(load_s, 3)
    runs = {}
    for label, clip in clips.items():
        log(f"bench: end to end on {clip.name}")
        runs[label] = end_to_end(engine, clip, target, options, repeats, max_frames)
    batch = 512 if engine.device == "cuda" else 64
    log("bench: capture model alone")
    with engine_threads():
        model_fps = model_throughput(engine.capture_model, batch)
    bake_s = None
    if bake:
        log("bench: Blender bake (bpy)")
        bake_s = blender_bake(log=log)
    return {"e2e_fps_720p": runs["720p"]["fps"], "realtime_factor_720p": runs["720p"]["realtime_factor"],
            "e2e_fps_1080p": runs["1080p"]["fps"], "peak_rss_mb": round(peak_rss_mb(), 1),
            "bake_s_1000f_20kv": bake_s, "stages_ms": stages, "device": engine.device, "backend": engine.backend,
            "cores": os.cpu_count(), "per_clip_s": per_clip, "clips": runs,
            "model_fps_batched": {"batch": batch, "fps": round(model_fps, 1),
                                  "mixed_precision": engine.device == "cuda" and engine.backend == "torch",
                                  "mirror_averaged": engine.backend == "onnx"},
            "paper_fps_ratio": round(runs["720p"]["fps"] / 38.3, 2), "target_vertices": len(target.vertices),
            "weights": str(weights) if weights else "shipped", "track_workers": track_workers,
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
