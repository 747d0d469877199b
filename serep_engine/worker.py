"""The background worker (DESIGN.md contract): `python -m serep_engine worker --job JOB`.

Stdout carries one JSON object per line and nothing else:
    {"type": "progress", "done": n, "total": N, "stage": "...", "fps": f}
    {"type": "warning", "message": "..."}
    {"type": "error", "message": "...", "traceback": "..."}      (exit status 1; 130 when cancelled)
    {"type": "done", "result": "PATH"}                            (exit status 0)
The done line may add "arkit_keys": {ARKit name: the target's shape key} when the job asks for ARKit weights.
Everything else that anything prints, from Python or from C libraries, goes to stderr: the protocol writes to
a private copy of the original stdout and file descriptor 1 is pointed at stderr. SIGINT and SIGTERM only set
a flag; the capture checks it between frames and stops with a cancelled error line, writing no result.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import asdict
from typing import TextIO

CANCELLED_EXIT = 130


class Protocol:
    """Writes the worker's JSON lines; one line per call, flushed at once."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def send(self, kind: str, **fields) -> None:
        self.stream.write(json.dumps({"type": kind, **fields}) + "\n")
        self.stream.flush()

    def progress(self, done: int, total: int, stage: str, fps: float) -> None:
        self.send("progress", done=int(done), total=int(total), stage=stage, fps=round(float(fps), 2))


def private_stdout() -> TextIO:
    """A stream to the original stdout, with fd 1 (print, C libraries) redirected to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def run(job_path: str, protocol: Protocol) -> int:
    """Run one job; returns the exit status. Never raises."""
    stop = threading.Event()

    def request_stop(signum, frame):
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        return _capture(job_path, protocol, stop)
    except Exception as error:  # every failure becomes an error line; the add-on shows its message
        engine = sys.modules.get("serep_engine.engine")  # not imported yet: the failure came before capture
        if stop.is_set() or (engine is not None and isinstance(error, engine.Cancelled)):
            protocol.send("error", message="cancelled", traceback="", cancelled=True)
            return CANCELLED_EXIT
        protocol.send("error", message=str(error) or type(error).__name__, traceback=traceback.format_exc())
        return 1


def _capture(job_path: str, protocol: Protocol, stop: threading.Event) -> int:
    from serep_engine.capture.video import probe
    from serep_engine.job import Job

    job = Job.load(job_path)
    info = probe(job.clip)
    if job.frame_start >= info.frame_count:
        raise ValueError(f"frame_start {job.frame_start} is past the clip's end ({info.frame_count} frames)")
    end = info.frame_count if job.frame_end is None else min(job.frame_end, info.frame_count)
    protocol.progress(0, end - job.frame_start, "loading", 0.0)

    from serep_engine.engine import Cancelled, CaptureOptions, Engine, TargetMesh

    engine = Engine.from_pretrained(device=job.device)
    if stop.is_set():
        raise Cancelled("capture cancelled")
    target = None if job.target is None else TargetMesh.load(job.target)
    result = engine.capture(job.clip, job.frame_start, end, target=target,
                            options=CaptureOptions(**asdict(job.options)),
                            progress=protocol.progress, should_stop=stop.is_set)
    missing = int((~result.face_found).sum())
    if missing:
        protocol.send("warning", message=f"no face in {missing} of {result.n_frames} frames "
                                         f"({'held' if job.options.gaps == 'hold' else 'interpolated'})")
    done = {"result": str(result.save(job.output))}
    if job.options.arkit:
        from serep_engine.retarget.arkit import match_arkit_names

        done["arkit_keys"] = match_arkit_names(job.shape_keys)
        if not done["arkit_keys"]:
            protocol.send("warning", message="none of the target's shape keys has an ARKit name")
    protocol.send("done", **done)
    return 0


def main(job_path: str) -> int:
    return run(job_path, Protocol(private_stdout()))
