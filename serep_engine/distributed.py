"""Batch baking of many clips over many processes or machines, with Dask (docs/distributed.md says why Dask).

The unit of work is the add-on's own: one job file per clip (serep_engine/contract/job.py, DESIGN.md) run by
`python -m serep_engine worker --job JOB` in a child process of a Dask worker, its JSON lines read back. So a
clip baked on the farm is baked exactly as it is from Blender, a crash or a leak ends with its process, and a
task that is cancelled ends its worker with SIGTERM (the worker stops cleanly on it).

    jobs = write_jobs(clips, out_dir, target="hero.npz")
    for outcome in run_batch(jobs, scheduler="tcp://farm:8786"):   # or local_workers=4 on this machine
        print(outcome)

Clips, target and output folder must be on storage every machine sees under the same path (as with any
render farm); the job files hold absolute paths.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from serep_engine.contract import Job, JobOptions


def write_jobs(clips: Sequence[str | os.PathLike], out_dir: str | os.PathLike, target: str | os.PathLike | None = None,
               options: JobOptions | None = None, device: str = "auto", start: int = 0,
               end: int | None = None) -> list[Path]:
    """One job file per clip in out_dir/jobs/, results to out_dir/<clip stem>.npz (absolute paths throughout).
    Two clips with the same name in different folders are refused rather than writing over each other."""
    out_dir = Path(out_dir).resolve()
    stems = [Path(clip).stem for clip in clips]
    clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashes:
        raise ValueError(f"several clips are named {', '.join(clashes)}: their results would overwrite each other")
    (out_dir / "jobs").mkdir(parents=True, exist_ok=True)
    paths = []
    for clip, stem in zip(clips, stems):
        job = Job(clip=Path(clip).resolve(), output=out_dir / f"{stem}.npz",
                  target=None if target is None else Path(target).resolve(), frame_start=start, frame_end=end,
                  device=device, options=options or JobOptions())
        Job.from_dict(job.to_dict())  # the worker's own checks, before anything is queued
        paths.append(job.save(out_dir / "jobs" / f"{stem}.json"))
    return paths


def run_job(job_path: str | os.PathLike, python: str | None = None, timeout: float | None = None) -> dict:
    """Run one job with the engine's worker in a child process; never raises. Returns
    {"job", "result" (path or None), "error" (message or None), "warnings", "frames", "seconds", "host",
    "pid" (of the process that ran the task)}."""
    started = time.perf_counter()
    outcome = {"job": str(job_path), "result": None, "error": None, "warnings": [], "frames": 0,
               "host": socket.gethostname(), "pid": os.getpid()}
    command = [python or sys.executable, "-m", "serep_engine", "worker", "--job", str(job_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               text=True, cwd=str(Path(job_path).parent))
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process)
        outcome.update(error=f"timed out after {timeout:.0f} s", seconds=round(time.perf_counter() - started, 2))
        return outcome
    except BaseException:  # interrupted: the worker stops cleanly on SIGTERM, writing no result
        _stop(process)
        raise
    for line in stdout.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        kind = message.get("type")
        if kind == "progress" and message.get("stage") in ("tracking", "reading the take"):  # a clip's, a take's
            outcome["frames"] = message.get("done", 0)
        elif kind == "warning":
            outcome["warnings"].append(message.get("message", ""))
        elif kind == "error":
            outcome["error"] = message.get("message", "error")
        elif kind == "done":
            outcome["result"] = message.get("result")
    if process.returncode != 0 and outcome["error"] is None:
        tail = (stderr.strip().splitlines() or ["no message"])[-1]
        outcome["error"] = f"the worker exited with status {process.returncode}: {tail}"
    outcome["seconds"] = round(time.perf_counter() - started, 2)
    return outcome


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def run_batch(job_paths: Sequence[str | os.PathLike], scheduler: str | None = None, local_workers: int | None = None,
              python: str | None = None, retries: int = 1, timeout: float | None = None) -> Iterator[dict]:
    """Run the jobs on a Dask cluster (the scheduler's address; start its workers with `--nthreads 1`: a clip
    uses several cores by itself) or on `local_workers` local processes of one thread each; yields each job's
    outcome (see run_job) as it finishes. A failed clip is reported and never stops the others; a task lost
    with its machine is run again (`retries`)."""
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler is None:
        workers = local_workers or max(1, (os.cpu_count() or 1) // 2)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    else:
        cluster = None
    client = Client(scheduler or cluster)
    try:
        futures = client.map(run_job, [str(p) for p in job_paths], python=python, timeout=timeout, pure=False,
                             retries=retries)
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
