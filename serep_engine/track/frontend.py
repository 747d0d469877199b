"""The capture front end for real footage: stream a clip, track the main face, and cut the same
similarity crop the synthetic renders use, its five anchor points smoothed over time (One Euro) so the
crop does not jitter. Frames without a face are flagged; the crop's smoothing restarts after a gap.
(The crop's smoothing steadies where the face is cut out; the codes' smoothing, `filters.smooth_codes`, is the
user's setting and acts on the expression.)"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from serep_engine.track.crop import crop_face, similarity_to_crop
from serep_engine.track.filters import OneEuroFilter
from serep_engine.track.tracking import FaceObservation, FaceTracker
from serep_engine.track.video import VideoInfo, probe, read_frames

# mediapipe face-mesh indices: both irises' centres, the nose tip, both mouth corners.
IRIS_CENTRES, NOSE_TIP, MOUTH_CORNERS = (468, 473), 1, (61, 291)


def five_points_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """The crop's five points in image-left to image-right order (whichever way the face is turned)."""
    eyes = landmarks[list(IRIS_CENTRES), :2]
    mouth = landmarks[list(MOUTH_CORNERS), :2]
    eyes, mouth = eyes[np.argsort(eyes[:, 0])], mouth[np.argsort(mouth[:, 0])]
    return np.vstack([eyes, landmarks[NOSE_TIP, :2][None], mouth])


@dataclass
class FrontEndFrame:
    index: int
    crop: np.ndarray | None  # (S, S, 3) RGB uint8, None without a face
    transform: np.ndarray | None  # 2x3 image -> crop
    observation: FaceObservation  # the tracker's: landmarks (478, 3) image pixels, blendshapes, matrix

    @property
    def found(self) -> bool:
        return self.observation.found

    @property
    def landmarks(self) -> np.ndarray:
        return self.observation.landmarks

    @property
    def crop_landmarks(self) -> np.ndarray:
        """(478, 2) landmarks in crop pixels (NaN without a face)."""
        if self.transform is None:
            return np.full((len(self.landmarks), 2), np.nan, np.float32)
        return (self.landmarks[:, :2] @ self.transform[:, :2].T + self.transform[:, 2]).astype(np.float32)


class LiveFrontEnd:
    """The front end one frame at a time (frames in order): tracking, smoothed five points, crop.
    `crop_smoothing` scales the anchor points' One Euro filter's minimum cut-off down (0 turns it off)."""

    def __init__(self, fps: float = 30.0, crop_size: int = 256, crop_smoothing: float = 1.0):
        self.crop_size = crop_size
        self.tracker = FaceTracker(video=True, fps=fps)
        self.points_filter = OneEuroFilter.with_strength(fps, crop_smoothing, cutoff=1.5, beta=0.02)
        self.count = 0

    def close(self) -> None:
        self.tracker.close()

    def __call__(self, rgb: np.ndarray, index: int | None = None) -> FrontEndFrame:
        index = self.count if index is None else index
        self.count += 1
        observation = self.tracker.track(rgb)
        if not observation.found:
            if self.points_filter:
                self.points_filter.reset()
            return FrontEndFrame(index, None, None, observation)
        points = five_points_from_mediapipe(observation.landmarks)
        if self.points_filter:
            points = self.points_filter(points)
        transform = similarity_to_crop(points, self.crop_size)
        return FrontEndFrame(index, crop_face(rgb, transform, self.crop_size), transform, observation)


def ahead(items: Iterable, depth: int = 4) -> Iterator:
    """`items` produced by a background thread up to `depth` ahead of the consumer, in order; the producer's
    errors are raised in the consumer. Decoding (OpenCV, which releases the GIL) so overlaps tracking."""
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((end, None))
        except BaseException as error:  # handed to the consumer, raised there
            offer((end, error))
        finally:
            if hasattr(items, "close"):  # a generator: release what it holds (the video file) now
                items.close()

    thread = threading.Thread(target=produce, name="serep-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def front_end(video: str | os.PathLike | VideoInfo, start: int = 0, end: int | None = None, crop_size: int = 256,
              crop_smoothing: float = 1.0) -> Iterator[FrontEndFrame]:
    """Per frame of the clip's range, the main face's landmarks and its smoothed crop. Frames are decoded
    a few ahead by a background thread while the current one is tracked. `video`: a path, or its probe."""
    info = video if isinstance(video, VideoInfo) else probe(video)
    live = LiveFrontEnd(info.fps, crop_size, crop_smoothing)
    try:
        for index, rgb in ahead(read_frames(info, start, end)):
            yield live(rgb, index)
    finally:
        live.close()


def track_chunk(info: VideoInfo, start: int, end: int | None, warmup: int = 10, crop_size: int = 256,
                out_size: int | None = None, crop_smoothing: float = 1.0) -> list[FrontEndFrame]:
    """Frames [start, end) of the clip through a fresh front end started `warmup` frames earlier, so that
    tracking and the crop's smoothing have settled by `start`. Crops are resized to `out_size` (INTER_AREA, as
    the capture model resizes them) so that little crosses between processes."""
    live = LiveFrontEnd(info.fps, crop_size, crop_smoothing)
    frames = []
    try:
        for index, rgb in read_frames(info, max(0, start - warmup), end):
            frame = live(rgb, index)
            if index < start:
                continue
            if frame.crop is not None and out_size and out_size != crop_size:
                frame.crop = cv2.resize(frame.crop, (out_size, out_size), interpolation=cv2.INTER_AREA)
            frames.append(frame)
    finally:
        live.close()
    return frames


def _one_thread_each() -> None:
    cv2.setNumThreads(1)


def parallel_front_end(video: str | os.PathLike | VideoInfo, start: int = 0, end: int | None = None,
                       workers: int = 2, crop_size: int = 256, out_size: int | None = None, crop_smoothing: float = 1.0,
                       chunk: int = 300, warmup: int = 10) -> Iterator[FrontEndFrame]:
    """The front end spread over `workers` processes (for machines with many cores: tracking is the slowest
    stage): the range cut into chunks of `chunk` frames, each decoded and tracked by a worker from `warmup`
    frames before it, yielded in order with at most two chunks per worker ahead (memory stays bounded). The
    first chunk is the single pass's; each later one starts a fresh mediapipe track, which then follows a
    slightly different, equally valid path (on skarsgard.mp4, 1080p: landmarks within 2.5 px of one pass).
    Spawned processes: a script calling this needs the `if __name__ == "__main__":` guard."""
    info = video if isinstance(video, VideoInfo) else probe(video)
    last = info.frame_count if end is None else min(end, info.frame_count)
    bounds = [[first, first + chunk] for first in range(start, max(last, start + 1), chunk)]
    bounds[-1][1] = end  # the last chunk reads to the end asked for, or the real end (containers miscount frames)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_one_thread_each)
    pending: deque = deque()
    try:
        for first, stop in bounds:
            pending.append(pool.submit(track_chunk, info, first, stop, warmup, crop_size, out_size, crop_smoothing))
            while len(pending) > 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
