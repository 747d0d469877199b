"""Reliability: faces as real footage has them. No face at all (a clear error, no result file), a face lost
for a stretch (frames flagged, curves held or interpolated as the setting says), two people (the main one is
followed), occlusions, tilted heads, dark and blurred frames (tracked or flagged, never a crash).

Clips are made from a real clip with OpenCV. Cases that run the capture model skip until its weights exist."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from serep_engine.contract.job import Job, JobOptions
from serep_engine.paths import data_dir
from serep_engine.track.frontend import front_end

VIDEOS = data_dir() / "real" / "videos"
REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "serep_engine" / "weights" / "capture_model.safetensors"


def read(name: str, count: int) -> list[np.ndarray]:
    path = VIDEOS / name
    if not path.exists():
        pytest.skip(f"real clips not found at {VIDEOS}")
    capture = cv2.VideoCapture(str(path))
    frames = [capture.read()[1] for _ in range(count)]
    capture.release()
    return frames


def write_clip(path: Path, frames, fps: float = 25.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def actor():
    return read("May_5s.mp4", 40)  # 512 x 512, one face filling half the frame


@pytest.fixture(scope="module")
def engine():
    if not WEIGHTS.exists():
        pytest.skip("the capture model's weights are not in serep_engine/weights yet")
    from serep_engine.engine import Engine

    return Engine.from_pretrained("cpu")


# -- the front end (mediapipe) ----------------------------------------------------------------------------------
def test_two_people_in_view_the_main_one_is_followed(tmp_path, actor):
    """The actor (large, left) and a bystander (smaller, right) in every frame: every frame's landmarks are
    the actor's."""
    bystander = read("obama.mp4", 20)
    frames = []
    for main, other in zip(actor[:20], bystander):
        frame = np.full((512, 900, 3), 40, np.uint8)
        frame[:, :512] = main
        frame[150:375, 560:860] = cv2.resize(other[100:520, 340:900], (300, 225))
        frames.append(frame)
    tracked = list(front_end(write_clip(tmp_path / "two.mp4", frames)))
    assert all(f.found for f in tracked)
    assert all((f.landmarks[:, 0] < 512).all() for f in tracked)


@pytest.mark.parametrize("damage", ["dark", "very dark", "blurred", "occluded mouth", "dark glasses", "tilted"])
def test_hard_frames_are_tracked_or_flagged_never_a_crash(tmp_path, actor, damage):
    def spoil(frame):
        if damage == "dark":
            return (frame * 0.25).astype(np.uint8)
        if damage == "very dark":
            return (frame * 0.04).astype(np.uint8)
        if damage == "blurred":
            return cv2.GaussianBlur(frame, (0, 0), 6)
        out = frame.copy()
        if damage == "occluded mouth":  # a hand over the mouth
            out[330:440, 170:340] = (120, 150, 200)
        elif damage == "dark glasses":
            out[200:260, 140:360] = 15
        else:
            out = cv2.warpAffine(frame, cv2.getRotationMatrix2D((256, 256), 50, 1.0), (512, 512))
        return out

    tracked = list(front_end(write_clip(tmp_path / "hard.mp4", [spoil(f) for f in actor[:15]])))
    assert len(tracked) == 15
    for frame in tracked:
        if frame.found:
            assert frame.crop.shape == (256, 256, 3) and np.isfinite(frame.landmarks).all()
        else:
            assert frame.crop is None and np.isnan(frame.landmarks).all()
    found = sum(f.found for f in tracked)
    if damage in ("dark", "blurred", "dark glasses", "tilted"):
        assert found >= 12, f"{damage}: the face was found in only {found} of 15 frames"


# -- whole captures (the capture model) -------------------------------------------------------------------------
def worker(job_path: Path) -> tuple[int, list[dict]]:
    run = subprocess.run([sys.executable, "-m", "serep_engine", "worker", "--job", str(job_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return run.returncode, [json.loads(line) for line in run.stdout.splitlines()]


def test_no_face_in_any_frame_is_an_error_and_writes_no_result(engine, tmp_path, actor):
    rng = np.random.default_rng(0)
    empty = [cv2.GaussianBlur(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), (0, 0), 3) for _ in range(12)]
    clip = write_clip(tmp_path / "no face.mp4", empty)
    cli = subprocess.run([sys.executable, "-m", "serep_engine", "capture", str(clip), "--out",
                          str(tmp_path / "r.npz")], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert cli.returncode == 1 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines()[-1] == f"serep: error: no face was found in any of the 12 frames of {clip}"
    code, lines = worker(Job(clip=clip, output=tmp_path / "w.npz").save(tmp_path / "job.json"))
    assert code == 1 and lines[-1]["type"] == "error" and "no face was found" in lines[-1]["message"]
    assert not list(tmp_path.glob("*.npz"))


@pytest.mark.parametrize("gaps", ["hold", "interpolate"])
def test_a_face_lost_for_a_stretch_is_flagged_and_filled_as_set(engine, tmp_path, actor, gaps):
    """Frames 15-24 blacked out: flagged, and with no smoothing the codes there hold frame 14's code or run
    in a straight line from frame 14's to frame 25's."""
    from serep_engine.engine import CaptureOptions

    frames = [np.zeros_like(f) if 15 <= i < 25 else f for i, f in enumerate(actor[:35])]
    clip = write_clip(tmp_path / "gap.mp4", frames)
    result = engine.capture(clip, options=CaptureOptions(smoothing=0.0, gaps=gaps))
    assert np.flatnonzero(~result.face_found).tolist() == list(range(15, 25))
    codes = result.codes
    if gaps == "hold":
        assert np.allclose(codes[15:25], codes[14], atol=1e-6)
    else:
        line = codes[14] + (codes[25] - codes[14]) * (np.arange(1, 11) / 11)[:, None]
        assert np.allclose(codes[15:25], line, atol=1e-5)
    assert np.isfinite(codes).all() and np.isfinite(result.weights).all()
    job = Job(clip=clip, output=tmp_path / "w.npz", options=JobOptions(gaps=gaps))
    code, lines = worker(job.save(tmp_path / "job.json"))
    assert code == 0 and lines[-1]["type"] == "done"
    said = "held" if gaps == "hold" else "interpolated"
    assert {"type": "warning", "message": f"no face in 10 of 35 frames ({said})"} in lines
