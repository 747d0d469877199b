"""Streaming video input: frames one at a time (memory independent of clip length), the clip's own fps,
an optional frame range, and errors an artist can read."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class VideoError(ValueError):
    """A clip that cannot be read; the message says why in plain words."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    frame_count: int  # as the container reports it; streaming stops at the real end
    width: int
    height: int
    start_ms: float = 0.0  # timestamp of the first frame (read_frames puts frames on the grid from here)


def quiet_decoder() -> None:
    """FFmpeg's and OpenCV's own messages off ("moov atom not found"): the errors here say it in plain words,
    and the CLI's contract is one line. Set OPENCV_FFMPEG_LOGLEVEL / OPENCV_LOG_LEVEL to see them."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when the first clip is opened
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.setLogLevel(1)  # fatal only


def probe(path: str | os.PathLike) -> VideoInfo:
    path = Path(path)
    quiet_decoder()
    if not path.exists():
        raise VideoError(f"clip not found: {path}")
    if path.is_dir():
        raise VideoError(f"expected a video file, got a folder: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"the clip is an empty file (0 bytes): {path.name}")
    return _probe_file(path.absolute())


def _probe_file(path: Path) -> VideoInfo:
    """Opening a clip and decoding its first frame costs 5-250 ms: a capture probes once and passes the
    `VideoInfo` along (to `read_frames`, the front end)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"cannot open {path.name} as a video: the file is damaged or incomplete, not a video, "
                             "or in a format this build cannot read")
        ok, frame = capture.read()
        if not ok or frame is None:
            codec = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").strip("\0 ")
            raise VideoError(f"no frame of {path.name} can be decoded (it has no frames, or its codec "
                             f"{codec or 'unknown'!r} is not supported; H.264 MP4 always works)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            raise VideoError(f"the clip does not say its frame rate: {path.name}")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        start_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        return VideoInfo(path, float(fps), max(count, 1), frame.shape[1], frame.shape[0],
                         start_ms if np.isfinite(start_ms) else 0.0)
    finally:
        capture.release()


def read_frames(video: str | os.PathLike | VideoInfo, start: int = 0,
                end: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 frame) for frames start <= index < end of the clip, in order. OpenCV applies
    the container's rotation metadata, so phone clips come out upright.

    Frames come on the clip's constant frame grid (its average fps), placed by their timestamps: a variable
    frame rate clip (phones) has a frame held where the source skips time and dropped where it is denser, so
    the animation keeps time with the clip's sound. On a constant-rate clip this is every frame, in order.
    `video`: a path, or its probe."""
    info = video if isinstance(video, VideoInfo) else probe(video)
    if start < 0 or (end is not None and end <= start):
        raise VideoError(f"empty or negative frame range [{start}, {end})")
    stop = end if end is not None else np.inf
    capture = cv2.VideoCapture(str(info.path))
    try:
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        index, pending, pending_slot, last_ms = start, None, start - 1, -np.inf
        while index < stop:
            ok, frame = capture.read()
            if not ok:
                break
            ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if np.isfinite(ms) and ms > last_ms:
                slot, last_ms = round((ms - info.start_ms) * info.fps / 1000.0), ms
            else:  # no usable timestamp: the next slot
                slot = pending_slot + 1
            while pending is not None and index < min(slot, stop):
                yield index, pending
                index += 1
            pending, pending_slot = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), slot
        if pending is not None and pending_slot >= index and index < stop:
            yield index, pending
    finally:
        capture.release()
