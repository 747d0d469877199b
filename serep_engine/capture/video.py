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


def probe(path: str | os.PathLike) -> VideoInfo:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"clip not found: {path}")
    if path.is_dir():
        raise VideoError(f"expected a video file, got a folder: {path}")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise VideoError(f"not a video this build can read (unknown format or codec): {path.name}")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoError(f"the clip has no readable frames: {path.name}")
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            raise VideoError(f"the clip does not say its frame rate: {path.name}")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        return VideoInfo(path, float(fps), max(count, 1), frame.shape[1], frame.shape[0])
    finally:
        capture.release()


def read_frames(path: str | os.PathLike, start: int = 0, end: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 frame) for frames start <= index < end of the clip, in order. OpenCV applies
    the container's rotation metadata, so phone clips come out upright."""
    info = probe(path)
    if start < 0 or (end is not None and end <= start):
        raise VideoError(f"empty or negative frame range [{start}, {end})")
    capture = cv2.VideoCapture(str(info.path))
    try:
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        index = start
        while end is None or index < end:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
