"""Batch baking with Dask (serep_engine/distributed.py): the add-on's worker job as the unit of work, run on a
scheduler with two worker processes on this machine, as on a farm; and `serep batch` on local processes."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from serep_engine.contract.job import Job
from serep_engine.contract.result import CaptureResult
from serep_engine.distributed import run_batch, write_jobs
from serep_engine.paths import data_dir

VIDEOS = data_dir() / "real" / "videos"
CLIPS = [VIDEOS / "May_5s.mp4", VIDEOS / "WDA_KatieHill_000.mp4"]
DASK = Path(sys.executable).with_name("dask")


def needs_clips():
    if not all(clip.exists() for clip in CLIPS):
        pytest.skip(f"real clips not found at {VIDEOS}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_write_jobs_writes_checked_absolute_job_files(tmp_path):
    needs_clips()
    jobs = write_jobs(CLIPS, tmp_path / "out", start=5, end=25)
    assert [job.name for job in jobs] == ["May_5s.json", "WDA_KatieHill_000.json"]
    for job_path, clip in zip(jobs, CLIPS):
        job = Job.load(job_path)
        assert job.clip == clip.resolve() and job.output == (tmp_path / "out" / f"{clip.stem}.npz").resolve()
        assert (job.frame_start, job.frame_end) == (5, 25) and job.output.parent.is_absolute()


def test_write_jobs_refuses_clips_whose_results_would_collide(tmp_path):
    needs_clips()
    (tmp_path / "b").mkdir()
    twin = tmp_path / "b" / CLIPS[0].name
    twin.write_bytes(CLIPS[0].read_bytes())
    with pytest.raises(ValueError, match="May_5s"):
        write_jobs([CLIPS[0], twin], tmp_path / "out")
    assert not (tmp_path / "out" / "jobs").exists() or not any((tmp_path / "out" / "jobs").iterdir())


@pytest.fixture
def farm(tmp_path):
    """A Dask scheduler and two single-thread workers, started as a farm's machines would start them."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    logs = open(tmp_path / "dask.log", "w")
    processes = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], stdout=logs, stderr=logs, env=env)]
    try:
        for name in ("w1", "w2"):
            processes.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--name", name,
                                               "--no-dashboard"], stdout=logs, stderr=logs, env=env))
        from dask.distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(30)
        logs.close()


@pytest.mark.slow
def test_a_farm_of_two_workers_bakes_each_clip_and_reports_a_broken_one(tmp_path, farm):
    needs_clips()
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    jobs = write_jobs([*CLIPS, broken], tmp_path / "out", start=0, end=20)
    outcomes = {Path(o["job"]).stem: o for o in run_batch(jobs, scheduler=farm, retries=0)}
    assert set(outcomes) == {"May_5s", "WDA_KatieHill_000", "broken"}
    assert outcomes["broken"]["result"] is None and "broken.mp4" in outcomes["broken"]["error"]
    for clip in CLIPS:
        outcome = outcomes[clip.stem]
        assert outcome["error"] is None, outcome
        result = CaptureResult.load(outcome["result"])
        assert result.n_frames == 20 and result.face_found.all()
        assert Path(outcome["result"]) == (tmp_path / "out" / f"{clip.stem}.npz").resolve()
    assert len({o["pid"] for o in outcomes.values()}) == 2  # both workers took clips


@pytest.mark.slow
def test_serep_batch_on_local_processes(tmp_path, repo_root):
    needs_clips()
    clips = tmp_path / "takes"
    clips.mkdir()
    for clip in CLIPS:
        (clips / clip.name).symlink_to(clip)
    (clips / "notes.txt").write_text("not a clip: skipped")
    done = subprocess.run([sys.executable, "-m", "serep_engine", "batch", str(clips), "--out", str(tmp_path / "out"),
                           "--workers", "2", "--end", "15"], cwd=repo_root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["clips"] == 2 and summary["done"] == 2 and summary["failed"] == []
    assert summary["frames"] == 30 and summary["fps"] > 0
    assert sorted(Path(r).name for r in summary["results"]) == ["May_5s.npz", "WDA_KatieHill_000.npz"]
