"""Performance work that must not change results: the overlapped capture path, constant-memory basis
compression, the thread limits, and the `serep bench --json` contract (numbers are never asserted on)."""

import importlib.util
import json
import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the benchmark's stand-in capture model needs torch (none for Python 3.13)")

from serep_engine.capture.model import CaptureModel, CaptureModelConfig, CaptureNet
from serep_engine.engine import CaptureOptions, Engine, engine_threads
from serep_engine.paths import data_dir
from serep_engine.shapekeys.basis import compress
from serep_engine.track.frontend import LiveFrontEnd, ahead, front_end, parallel_front_end
from serep_engine.track.pose import HeadPoseEstimator
from serep_engine.track.video import probe, read_frames

VIDEOS = data_dir() / "real" / "videos"
CLIP = VIDEOS / "May_5s.mp4"  # 512x512, 25 fps, a face in every frame
OTHER_CLIP = VIDEOS / "WDA_KatieHill_000.mp4"


def needs_clips():
    if not (CLIP.exists() and OTHER_CLIP.exists()):
        pytest.skip(f"real clips not found at {VIDEOS}")


def untrained_capture_model() -> CaptureModel:
    """The capture network's architecture with seeded random weights: same cost, deterministic outputs."""
    torch.manual_seed(0)
    return CaptureModel(CaptureNet(CaptureModelConfig()), torch.device("cpu"))


# -- the decode-ahead thread ------------------------------------------------------------------------------
def test_ahead_keeps_order_and_raises_the_producers_error():
    assert list(ahead(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("decoder failed")

    items = ahead(broken())
    assert next(items) == 1
    with pytest.raises(ValueError, match="decoder failed"):
        next(items)


def test_ahead_stops_and_closes_its_source_when_the_consumer_stops():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    items = ahead(endless(), depth=2)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()  # what a `for` loop left by an exception does
    assert closed.wait(5)
    assert not any(t.name == "serep-decode" for t in threading.enumerate())


# -- the overlapped track is the sequential one -------------------------------------------------------------
def test_overlapped_track_gives_what_the_frames_give_one_by_one(face_model, monkeypatch):
    """Decode, tracking and the model run in three threads; the result must equal running the same front
    end, pose, model and landmark refinement on each frame in order (here with small batches, so that several are
    in flight, and the refinement in chunks of 8 faces: the actor's rest from the first chunk)."""
    needs_clips()
    from serep_engine.capture.landmarks68 import LandmarkMap
    from serep_engine.expression.model import ExpressionModel

    model = untrained_capture_model()
    engine = Engine(face_model, ExpressionModel.from_pretrained("cpu", face_model), model, torch.device("cpu"))
    monkeypatch.setattr("serep_engine.engine.REFINE_CHUNK", 8)
    tracked = engine.track(CLIP, 0, 30, CaptureOptions(batch_size=4))

    info = probe(CLIP)
    live, pose = LiveFrontEnd(info.fps, model.crop_size), HeadPoseEstimator(face_model)
    codes, landmarks, poses, points478, scores = [], [], [], [], []
    for index, rgb in read_frames(CLIP, 0, 30):
        frame = live(rgb, index)
        assert frame.found
        code, _ = model.predict([frame.crop], [frame.crop_landmarks])
        codes.append(code[0])
        landmarks.append(LandmarkMap.from_pretrained()(frame.landmarks))
        poses.append(pose(frame.landmarks, (info.height, info.width)))
        points478.append(frame.landmarks)
        scores.append(frame.observation.blendshapes)
    live.close()
    assert list(tracked["frames"]) == list(range(30)) and tracked["face_found"].all()
    rest = engine.refiner().clip_rest(np.array(points478[:8]), np.array(codes[:8]), np.array(scores[:8]))
    refined = engine.refiner().refine(np.array(points478), np.array(codes), rest=rest)
    np.testing.assert_allclose(tracked["codes_raw"], refined, atol=1e-4)
    assert np.abs(refined - np.array(codes)).max() > 0.01  # the refinement moved the network's codes
    np.testing.assert_allclose(tracked["codes_network"], np.array(codes), atol=1e-4)  # kept for their ARKit keys
    np.testing.assert_allclose(tracked["landmarks2d"], np.array(landmarks), atol=1e-2)
    np.testing.assert_allclose(tracked["head_pose"], np.array(poses), atol=1e-5)
    live_frames = [engine.capture_frame(rgb, info.fps) for _, rgb in read_frames(CLIP, 0, 30)]  # live use
    engine.end_live()
    assert all(frame.found for frame in live_frames)
    alone = engine.refiner().refine(np.array(points478), np.array(codes), shared_identity=False)  # no clip to share
    np.testing.assert_allclose(np.array([f.code for f in live_frames]), alone, atol=1e-4)
    np.testing.assert_allclose(np.array([f.head_pose for f in live_frames]), tracked["head_pose"], atol=1e-5)


def test_a_cancelled_track_leaves_no_thread_behind(face_model):
    needs_clips()
    from serep_engine.engine import Cancelled
    from serep_engine.expression.model import ExpressionModel

    engine = Engine(face_model, ExpressionModel.from_pretrained("cpu", face_model), untrained_capture_model(),
                    torch.device("cpu"))
    asked = []
    with pytest.raises(Cancelled):
        engine.track(CLIP, options=CaptureOptions(batch_size=4), should_stop=lambda: asked.append(1) or len(asked) > 20)
    assert len(asked) == 21
    assert not [t.name for t in threading.enumerate() if t.name.startswith(("serep-decode", "serep-model"))]


def test_parallel_front_end_keeps_every_frame_in_order():
    """Chunks tracked by two processes: the same frames in the same order, the first chunk exactly the single
    pass, later chunks on their own fresh track (close to the single pass's, not equal), crops at the size
    asked for (the network's input: what the model would have resized them to)."""
    needs_clips()
    single = list(front_end(CLIP, 0, 100))
    chunked = list(parallel_front_end(CLIP, 0, 100, workers=2, out_size=96, chunk=40, warmup=5))
    assert [f.index for f in chunked] == list(range(100)) == [f.index for f in single]
    assert [f.found for f in chunked] == [f.found for f in single]
    for a, b in zip(single[:40], chunked[:40]):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        np.testing.assert_array_equal(a.transform, b.transform)
    gaps = [np.abs(a.landmarks[:, :2] - b.landmarks[:, :2]).max() for a, b in zip(single, chunked)]
    assert max(gaps) < 5.0  # pixels, on a 512 px clip
    assert all(f.crop.shape == (96, 96, 3) for f in chunked)


def test_engine_threads_limits_torch_and_blas_and_restores_them():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    with engine_threads():
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 4)
        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        assert blas and max(blas) == torch.get_num_threads()
    assert torch.get_num_threads() == before


# -- compression: exact, minimal, constant memory ------------------------------------------------------------
def smooth_take(frames: int, vertices: int, keys: int = 32, seed: int = 0):
    """A basis whose keys fall off in size and slowly varying weights, like decoded expressions."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(keys, vertices, 3)) * np.exp(-np.arange(keys) / 5)[:, None, None] * 0.2
    basis[:, : vertices // 3] = 0.0  # a still part (back of the head): never touched by the error scan
    t = np.linspace(0, 20, frames)[:, None]
    weights = np.sin(t * rng.uniform(0.2, 2.0, keys) + rng.uniform(0, 6, keys))
    weights += 0.05 * rng.normal(size=(frames, keys))
    return basis.astype(np.float32), weights.astype(np.float32)


def true_error(basis, weights, new_basis, new_weights) -> float:
    difference = np.tensordot(new_weights, new_basis, 1) - np.tensordot(weights, basis, 1)
    return float(np.linalg.norm(difference, axis=2).max())


def test_compress_reports_its_true_error_and_keeps_the_fewest_keys():
    basis, weights = smooth_take(300, 600)
    tolerance = 0.01
    new_basis, new_weights, error = compress(basis, weights, tolerance)
    assert error <= tolerance
    assert true_error(basis, weights, new_basis, new_weights) == pytest.approx(error, rel=1e-3, abs=1e-6)
    fewer = len(new_basis) - 1  # one key less must miss the tolerance
    _, _, fewer_error = compress(basis, weights, 0.0, max_keys=fewer)
    assert fewer_error > tolerance


def test_compress_memory_does_not_grow_with_frames_times_vertices():
    basis, weights = smooth_take(6000, 3000)
    full_target_mb = 6000 * 3000 * 3 * 8 / 2**20  # what the per-frame displacements would take (float64)
    tracemalloc.start()
    try:
        new_basis, new_weights, error = compress(basis, weights, 0.01)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert error <= 0.01 and new_weights.shape == (6000, len(new_basis))
    assert peak_mb < full_target_mb / 4, (peak_mb, full_target_mb)


# -- serep bench ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_serep_bench_json_contract(tmp_path, repo_root):
    """A short run on small clips with a stand-in capture model (the shipped one's architecture): the last
    stdout line carries the contract's keys; the numbers themselves are measured, never asserted."""
    needs_clips()
    untrained_capture_model().save(tmp_path / "model")
    done = subprocess.run([sys.executable, "-m", "serep_engine", "bench", "--json",
                           "--weights", str(tmp_path / "model"),
                           "--clip-720p", str(CLIP), "--clip-1080p", str(OTHER_CLIP), "--frames", "12",
                           "--repeats", "1", "--no-bake"], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("e2e_fps_720p", "realtime_factor_720p", "e2e_fps_1080p", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["bake_s_1000f_20kv"] is None  # --no-bake
    assert result["device"] == "cpu" and result["cores"] >= 1
    stages = result["stages_ms"]
    assert set(stages) >= {"decode", "tracking", "crop", "e_img", "dmesh_decode", "transfer", "compress"}
    assert all(stages[name] > 0 for name in ("decode", "tracking", "e_img")) and stages["frames"] == 12
    assert result["clips"]["720p"]["frames"] == 12
    # both are rounded (fps to 0.01, the factor to 0.001)
    assert result["realtime_factor_720p"] == pytest.approx(result["e2e_fps_720p"] / 25.0, abs=1e-3)


def test_blender_bake_benchmark_runs_in_real_blender():
    if importlib.util.find_spec("bpy") is None:  # not imported here: the extension test needs a fresh bpy
        pytest.skip("the bpy module (Blender) is not installed")
    from serep_engine.bench import blender_bake

    seconds = blender_bake(frames=20, vertices=400, keys=4, repeat=1)
    assert seconds is not None and seconds > 0


def test_identity_basis_is_cached_per_identity_and_model(face_model, tmp_path, monkeypatch):
    """The decoded basis comes back identical from the disk cache; another identity gets its own entry."""
    from serep_engine.expression.model import ExpressionModel

    monkeypatch.setenv("SEREP_CACHE", str(tmp_path))
    expression = ExpressionModel.from_pretrained("cpu", face_model)
    engine = Engine(face_model, expression, untrained_capture_model(), torch.device("cpu"))
    first = engine.identity_basis(face_model.face_neutral)
    with torch.no_grad():
        np.testing.assert_array_equal(first, expression.identity_basis(face_model.face_neutral).numpy())
    (entry,) = (tmp_path / "identity-bases").glob("*.npy")
    again = Engine(face_model, expression, engine.capture_model, engine.device).identity_basis(face_model.face_neutral)
    np.testing.assert_array_equal(again, first)
    wider = face_model.face_neutral * np.array([1.1, 1.0, 1.0], np.float32)
    assert not np.array_equal(engine.identity_basis(wider), first)
    assert len(list((tmp_path / "identity-bases").glob("*.npy"))) == 2 and entry.exists()
