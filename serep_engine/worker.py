"""The background worker (DESIGN.md contract): `python -m serep_engine worker --job JOB`.

A job's clip is a video (captured) or a Live Link Face / ARKit take, a `.csv` (imported: `Engine.import_take`).

Stdout carries one JSON object per line and nothing else: the messages of `contract/messages.py` (exit
status 0 after "done", 1 after "error", 130 when cancelled). The done line adds "arkit_keys": {the target's
shape key: its ARKit name} when the job asks for ARKit weights. Everything else that anything prints, from
Python or from C libraries, goes to stderr: the protocol writes to a private copy of the original stdout and
file descriptor 1 is pointed at stderr. SIGINT and SIGTERM only set a flag; the capture checks it between
frames and stops with a cancelled error line, writing no result.

A worker never outlives the program that started it: when its parent process is gone (Blender quit or was
killed) it stops as if cancelled, and leaves at once if it has not stopped after a grace period. A GPU that runs
out of memory is retried with half the batch, down to one frame, then on the CPU, each step a warning line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from typing import TextIO

from serep_engine.contract import TAKE_SUFFIXES, Job, encode_message, read_take
from serep_engine.contract.arkit import match_arkit_names

CANCELLED_EXIT = 130
ORPHAN_GRACE_S = 10.0  # after the parent is gone, how long a stop may take before the worker just leaves


class Protocol:
    """Writes the worker's JSON lines; one line per call, flushed at once."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def send(self, kind: str, **fields) -> None:
        self.stream.write(encode_message(kind, **fields))
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
    threading.Thread(target=_watch_parent, args=(os.getppid(), stop), daemon=True).start()
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
    job = Job.load(job_path)
    if job.clip.suffix.lower() in TAKE_SUFFIXES:  # a Live Link Face take: imported, not tracked
        take = read_take(job.clip)
        video, frame_count = None, int(take.frames()[-1]) + 1
    else:
        from serep_engine.track.video import probe

        video = probe(job.clip)  # once: the engine and the front end are handed this
        frame_count = video.frame_count
    if job.frame_start >= frame_count:
        raise ValueError(f"frame_start {job.frame_start} is past the clip's end ({frame_count} frames)")
    end = frame_count if job.frame_end is None else min(job.frame_end, frame_count)
    protocol.progress(0, end - job.frame_start, "loading", 0.0)

    from serep_engine.engine import Cancelled, CaptureOptions, Engine, TargetMesh

    engine = Engine.from_pretrained(device=job.device)
    if stop.is_set():
        raise Cancelled("capture cancelled")
    registration = None
    if job.target is not None:  # fitted once, before the clip is tracked: a mesh without a face is said early
        protocol.progress(0, 1, "fitting the target", 0.0)
        registration = engine.fit(TargetMesh.load(job.target))
    options = CaptureOptions(**asdict(job.options))

    def attempt(batch_size: int, device: str):
        nonlocal engine
        if device != engine.device:
            engine = Engine.from_pretrained(device=device)
        options.batch_size = batch_size
        return engine.capture(video, job.frame_start, end, target=registration, options=options,
                              progress=protocol.progress, should_stop=stop.is_set)

    if video is None:
        result = engine.import_take(take, registration, options, job.frame_start, end, protocol.progress)
    else:
        result = with_memory_fallback(attempt, options.batch_size, engine.device, protocol)
    if stop.is_set():
        raise Cancelled("capture cancelled")
    missing = int((~result.face_found).sum())
    if missing:
        protocol.send("warning", message=f"no face in {missing} of {result.n_frames} frames "
                                         f"({'held' if job.options.gaps == 'hold' else 'interpolated'})")
    if video is not None and result.n_frames < end - job.frame_start - 1:
        protocol.send("warning", message=f"the clip ended after {result.n_frames} of the {end - job.frame_start} "
                                         "frames its header promises (a damaged or cut-short file?)")
    try:
        done = {"result": str(result.save(job.output))}
    except OSError as error:
        raise OSError(f"could not write the result to {job.output}: {error.strerror or error}") from error
    if job.options.arkit:
        done["arkit_keys"] = match_arkit_names(job.shape_keys)
        if not done["arkit_keys"]:
            protocol.send("warning", message="none of the target's shape keys has an ARKit name")
    protocol.send("done", **done)
    return 0


def with_memory_fallback(attempt, batch_size: int, device: str, protocol: Protocol):
    """attempt(batch_size, device), retried after the GPU runs out of memory with half the batch down to one
    frame, then on the CPU; each retry is a warning line. Only torch's CUDA errors are known: without torch loaded
    (the ONNX backend) the attempt runs once."""
    torch = sys.modules.get("torch")
    if torch is None:
        return attempt(batch_size, device)
    while True:
        try:
            return attempt(batch_size, device)
        except torch.cuda.OutOfMemoryError:
            if device == "cpu":
                raise
            torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size //= 2
                protocol.send("warning", message=f"the GPU ran out of memory: retrying {batch_size} frames at a time")
            else:
                device = "cpu"
                protocol.send("warning", message="the GPU ran out of memory even one frame at a time: "
                                                 "running on the CPU (slower)")


def _watch_parent(parent: int, stop: threading.Event, interval: float = 0.5) -> None:
    """Stop when the process that started the worker is gone (it is re-parented); leave if stopping hangs."""
    if os.name != "posix":  # Windows: the add-on ends its worker when it stops (see serep_blender/capture_queue.py)
        return
    while os.getppid() == parent:
        time.sleep(interval)
    print("serep worker: the program that started it is gone; stopping", file=sys.stderr, flush=True)
    stop.set()
    time.sleep(ORPHAN_GRACE_S)
    os._exit(CANCELLED_EXIT)


def main(job_path: str) -> int:
    return run(job_path, Protocol(private_stdout()))
