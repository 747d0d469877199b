"""The worker's protocol (DESIGN.md contract), run as the add-on runs it: a separate process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from serep_engine.contract.job import Job

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "real" / "videos" / "May_5s.mp4"


def start(job_path):
    return subprocess.Popen([sys.executable, "-m", "serep_engine", "worker", "--job", str(job_path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def messages(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON object with a known type."""
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert all(m["type"] in ("progress", "warning", "error", "done") for m in lines), lines
    return lines


def real_clip():
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent} (../shared/data beside the repository)")
    return CLIP


def test_a_bad_clip_gives_one_error_line_and_a_failure_status(tmp_path):
    (tmp_path / "take.mp4").write_text("this is not a video")
    job = Job(clip=tmp_path / "take.mp4", output=tmp_path / "result.npz").save(tmp_path / "job.json")
    process = start(job)
    stdout, stderr = process.communicate(timeout=120)
    lines = messages(stdout)
    assert process.returncode == 1
    assert [m["type"] for m in lines] == ["error"]
    assert "take.mp4" in lines[0]["message"] and "Traceback" in lines[0]["traceback"]
    assert not (tmp_path / "result.npz").exists()


def test_a_bad_job_file_is_reported_on_the_protocol(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"version": 1, "clip": "gone.mp4", "output": "r.npz"}))
    process = start(tmp_path / "job.json")
    stdout, _ = process.communicate(timeout=120)
    (error,) = messages(stdout)
    assert process.returncode == 1 and error["type"] == "error" and "clip not found" in error["message"]


def test_a_frame_range_past_the_end_is_an_error(tmp_path):
    job = Job(clip=real_clip(), output=tmp_path / "result.npz", frame_start=100_000).save(tmp_path / "job.json")
    process = start(job)
    stdout, _ = process.communicate(timeout=120)
    (error,) = messages(stdout)
    assert process.returncode == 1 and "past the clip's end" in error["message"]


def test_sigterm_cancels_cleanly_without_a_result(tmp_path):
    """Cancel as the add-on does: SIGTERM once the worker reports progress; it answers with a cancelled
    error line, exits 130 and writes no result."""
    job = Job(clip=real_clip(), output=tmp_path / "result.npz").save(tmp_path / "job.json")
    process = start(job)
    first = json.loads(process.stdout.readline())
    assert first["type"] == "progress" and first["total"] == 125
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=120)
    lines = messages(rest)
    assert lines[-1] == {"type": "error", "message": "cancelled", "traceback": "", "cancelled": True}
    assert process.returncode == 130
    assert not list(tmp_path.glob("*.npz"))


def test_a_take_is_imported_with_the_usual_lines(tmp_path):
    """A job whose clip is a Live Link Face take (.csv): imported, not tracked; progress, the lost rows' warning,
    and the done line with the target's ARKit keys, as for a capture."""
    from serep_engine.contract import CaptureResult, read_take
    from serep_engine.contract.job import JobOptions

    take_path = REPO.parent / "shared" / "data" / "real" / "arkit_takes" / "apfel.csv"
    if not take_path.exists():
        pytest.skip(f"real ARKit takes not found at {take_path.parent}")
    job = Job(clip=take_path, output=tmp_path / "result.npz", frame_start=100, frame_end=400,
              options=JobOptions(arkit=True), shape_keys=["Basis", "JawOpen", "EyeBlink_L", "mine"])
    process = start(job.save(tmp_path / "job.json"))
    stdout, stderr = process.communicate(timeout=300)
    lines = messages(stdout)
    assert process.returncode == 0, stderr[-2000:]
    assert lines[0] == {"type": "progress", "done": 0, "total": 300, "stage": "loading", "fps": 0.0}
    assert {"reading the take", "retargeting"} <= {m["stage"] for m in lines if m["type"] == "progress"}
    take = read_take(take_path)
    keep = (take.frames() >= 100) & (take.frames() < 400)
    lost = int((~take.found[keep]).sum())
    warnings = [m["message"] for m in lines if m["type"] == "warning"]
    assert warnings == [f"no face in {lost} of {keep.sum()} frames (held)"]
    assert lines[-1] == {"type": "done", "result": str(tmp_path / "result.npz"),
                         "arkit_keys": {"JawOpen": "jawOpen", "EyeBlink_L": "eyeBlinkLeft"}}
    result = CaptureResult.load(tmp_path / "result.npz")
    assert result.frames.tolist() == take.frames()[keep].tolist() and lost > 0
