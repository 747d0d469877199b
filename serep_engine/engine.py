"""The engine's Python API: video in, a capture result (DESIGN.md contract) out.

    engine = Engine.from_pretrained(device="auto")
    result = engine.capture("take.mp4", target=TargetMesh(vertices, triangles), progress=print)
    result.save("take.npz")

Per frame: the tracking front end (mediapipe landmarks, smoothed similarity crop), the capture model
(crop + landmarks -> SEREP code), head pose from the landmarks. Over the clip: gaps without a face are
held or interpolated, codes are smoothed (raw codes are kept), decoded onto the target's identity
(the template's neutral without a target), carried to the target's own vertices, and compressed into a
shape-key basis with per-frame weights.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from serep_engine.bake.basis import compress
from serep_engine.bake.result import CaptureResult
from serep_engine.capture.filters import OneEuroFilter
from serep_engine.device import pick_device

ProgressFn = Callable[[int, int, str, float], None]  # (done, total, stage, fps)


class Cancelled(Exception):
    """The caller's `should_stop` asked the capture to stop."""


class NoFaceError(ValueError):
    """No face was found in any frame of the clip."""


@dataclass
class TargetMesh:
    """The artist's mesh in its own units and orientation: vertices (V, 3), triangles (T, 3), and optionally
    user-given landmarks (68 vertex indices, -1 where unknown) overriding automatic detection."""

    vertices: np.ndarray
    triangles: np.ndarray
    landmarks: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> TargetMesh:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["vertices"], data["faces"] if "faces" in data.files else data["triangles"],
                       data["landmarks"] if "landmarks" in data.files else None)


@dataclass
class CaptureOptions:
    smoothing: float = 1.0  # strength of the codes' One Euro filter (0 = raw codes)
    gaps: str = "hold"  # frames without a face: "hold" the last code or "interpolate" across the gap
    tolerance_cm: float = 0.005  # largest per-vertex error of the shape-key basis, in the template's cm
    max_keys: int | None = None
    arkit: bool = False  # also solve ARKit weights
    batch_size: int = 16
    track_workers: int = 1  # processes that decode and track chunks of the clip in parallel (1: threads only)


@dataclass
class FrameCapture:
    found: bool
    code: np.ndarray  # (D,)
    landmarks: np.ndarray  # (478, 3) image pixels (NaN without a face)
    head_pose: np.ndarray  # (6,) rotation vector (rad) + translation (cm), OpenCV camera frame


class Engine:
    def __init__(self, face_model, expression_model, capture_model, device: torch.device):
        self.face_model = face_model
        self.expression_model = expression_model
        self.capture_model = capture_model
        self.device = device
        self._live = None
        self._model_digest: str | None = None  # of the expression model's weights, for the identity-basis cache

    @classmethod
    def from_pretrained(cls, device: str = "auto", face_model=None) -> Engine:
        from serep_engine.capture.model import CaptureModel
        from serep_engine.expression.model import ExpressionModel
        from serep_engine.facemodel.ict import ICTModel

        device = pick_device(device)
        face_model = face_model or ICTModel.load()
        return cls(face_model, ExpressionModel.from_pretrained("cpu", face_model),
                   CaptureModel.from_pretrained(device), device)

    def identity_basis(self, neutral: np.ndarray) -> np.ndarray:
        """(D, 9409, 3) float32: the expression model decoded onto one identity (its neutral in template topology),
        cached on disk per model and identity (under $SEREP_CACHE/identity-bases), so that every clip after the
        first on one character skips the sparse factorisation and solve (0.4-1 s on a laptop CPU)."""
        import hashlib

        from serep_engine.facemodel.identities import cache_dir

        if self._model_digest is None:
            digest = hashlib.sha256()
            for name, tensor in self.expression_model.state_dict().items():
                digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
            self._model_digest = digest.hexdigest()
        neutral = np.ascontiguousarray(neutral)
        key = hashlib.sha256(f"{self._model_digest}{neutral.dtype}{neutral.shape}".encode() + neutral.tobytes())
        path = cache_dir() / "identity-bases" / f"{key.hexdigest()[:32]}.npy"
        if path.exists():
            try:
                return np.load(path, allow_pickle=False)
            except (OSError, ValueError):  # a damaged entry (a full disk, a killed process) is made again
                pass
        with torch.no_grad():
            basis = self.expression_model.identity_basis(neutral).numpy().astype(np.float32)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(partial, basis)
            os.replace(partial, path)
        except OSError:  # no cache (read-only or full disk) only costs time
            partial.unlink(missing_ok=True)
        return basis

    # -- per frame (live use) --------------------------------------------------------------------------
    def capture_frame(self, rgb: np.ndarray) -> FrameCapture:
        """One RGB uint8 frame of a live stream (frames in order; tracking and smoothing carry over)."""
        from serep_engine.capture.frontend import LiveFrontEnd
        from serep_engine.capture.pose import HeadPoseEstimator

        if self._live is None:
            self._live = (LiveFrontEnd(), HeadPoseEstimator(self.face_model))
        front, pose = self._live
        frame = front(rgb)
        if not frame.found:
            pose.reset()
            return FrameCapture(False, np.zeros(self.capture_model.code_dim, np.float32), frame.landmarks,
                                np.full(6, np.nan, np.float32))
        code = self.capture_model.predict([frame.crop], [frame.crop_landmarks])[0][0]
        return FrameCapture(True, code, frame.landmarks, pose(frame.landmarks, rgb.shape[:2]))

    # -- whole clips ----------------------------------------------------------------------------------
    def capture(self, video_path: str | os.PathLike, start: int = 0, end: int | None = None,
                target: TargetMesh | None = None, options: CaptureOptions | None = None,
                progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> CaptureResult:
        options = options or CaptureOptions()
        with engine_threads():
            tracked = self.track(video_path, start, end, options, progress, should_stop)
            return self.bake(tracked, target, options, progress)

    def track(self, video_path, start: int = 0, end: int | None = None, options: CaptureOptions | None = None,
              progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> dict:
        """Front end + capture model over the clip's range: per-frame raw codes, landmarks, pose, flags.

        Three stages overlap (OpenCV, mediapipe's graph and torch release the GIL): a thread decodes frames
        ahead, this thread tracks, crops and fits the head pose, and a model thread runs the capture model
        on batches of crops, at most two batches behind. With `options.track_workers` > 1, processes decode
        and track chunks of the clip in parallel instead (capture/frontend.py: parallel_front_end)."""
        from serep_engine.capture.frontend import front_end, parallel_front_end
        from serep_engine.capture.pose import HeadPoseEstimator
        from serep_engine.capture.video import probe

        options = options or CaptureOptions()
        info = probe(video_path)
        last = info.frame_count if end is None else min(end, info.frame_count)
        total = max(last - start, 0)
        pose = HeadPoseEstimator(self.face_model)
        frames, found, codes, landmarks68, poses = [], [], [], [], []
        pending: list = []  # (position, frame) waiting for a batch
        in_flight: deque = deque()  # batches handed to the model thread
        started = time.perf_counter()

        def predict(batch: list) -> None:  # in the model thread; fills positions the tracking thread is past
            predicted, points = self.capture_model.predict([f.crop for _, f in batch],
                                                           [f.crop_landmarks for _, f in batch])
            for (position, frame), code, crop_points in zip(batch, predicted, points):
                codes[position] = code
                inverse = cv_invert(frame.transform)
                landmarks68[position] = crop_points @ inverse[:, :2].T + inverse[:, 2]

        def flush(keep: int) -> None:
            if pending:
                in_flight.append(model.submit(predict, pending.copy()))
                pending.clear()
            while len(in_flight) > keep:
                in_flight.popleft().result()  # raises the model thread's error here

        if options.track_workers > 1:  # crops come at the network's input size (the same pixels predict makes)
            stream = parallel_front_end(video_path, start, end, options.track_workers, self.capture_model.crop_size,
                                        self.capture_model.config.source_size)
        else:
            stream = front_end(video_path, start, end, crop_size=self.capture_model.crop_size)
        with engine_threads(), ThreadPoolExecutor(1, thread_name_prefix="serep-model") as model:
            try:
                for frame in stream:
                    if should_stop is not None and should_stop():
                        raise Cancelled("capture cancelled")
                    position = len(frames)
                    frames.append(frame.index)
                    found.append(frame.found)
                    codes.append(None)
                    landmarks68.append(np.full((68, 2), np.nan, np.float32))
                    if frame.found:
                        poses.append(pose(frame.landmarks, (info.height, info.width)))
                        pending.append((position, frame))
                        if len(pending) >= options.batch_size:
                            flush(keep=2)
                    else:
                        pose.reset()
                        poses.append(np.full(6, np.nan, np.float32))
                    if progress is not None and (len(frames) % 10 == 0 or len(frames) == total):
                        progress(len(frames), total, "tracking",
                                 len(frames) / max(time.perf_counter() - started, 1e-6))
                flush(keep=0)
            finally:
                stream.close()  # now, not when garbage is collected: the decode thread or tracking processes stop
                for job in in_flight:
                    job.cancel()
        if not frames:
            raise ValueError(f"no frames in the range {start}..{end} of {video_path}")
        found = np.array(found, bool)
        if not found.any():
            raise NoFaceError(f"no face was found in any of the {len(frames)} frames of {video_path}")
        dim = self.capture_model.code_dim
        raw = np.array([c if c is not None else np.full(dim, np.nan) for c in codes], np.float32)
        return {"frames": np.array(frames), "fps": info.fps, "face_found": found, "codes_raw": raw,
                "landmarks2d": np.stack(landmarks68).astype(np.float32), "head_pose": np.stack(poses)}

    def bake(self, tracked: dict, target: TargetMesh | None, options: CaptureOptions,
             progress: ProgressFn | None = None) -> CaptureResult:
        """Fill gaps, smooth, decode onto the target and compress into a shape-key basis."""
        found = tracked["face_found"]
        raw = fill_gaps(tracked["codes_raw"], found, options.gaps)
        codes = smooth_codes(raw, tracked["fps"], options.smoothing, found)
        head_pose = fill_gaps(tracked["head_pose"], found, options.gaps)
        if progress is not None:
            progress(0, 1, "retargeting", 0.0)
        with torch.no_grad():
            if target is None:
                template_basis = self.identity_basis(self.face_model.face_neutral)
                user_basis, registration = template_basis, None
            else:
                from serep_engine.retarget import fit_target

                registration = fit_target(self.face_model, target.vertices, target.triangles, target.landmarks)
                template_basis = self.identity_basis(registration.neutral)
                user_basis = registration.to_user(template_basis)
        tolerance = options.tolerance_cm * (1.0 if registration is None else registration.scale_to_user)
        basis, weights, _ = compress(user_basis, codes, tolerance, options.max_keys)
        extra = {}
        if options.arkit:
            from serep_engine.retarget.arkit import ARKitSolver

            neutral = self.face_model.face_neutral if registration is None else registration.neutral
            solver = ARKitSolver(self.face_model, neutral)
            # a block of frames at a time: a long take's (F, 9409, 3) displacements would not fit in memory
            arkit = [solver.solve(np.tensordot(codes[first:first + 256], template_basis, axes=1))
                     for first in range(0, len(codes), 256)]
            extra = {"arkit_names": np.array(solver.names), "arkit_weights": np.concatenate(arkit)}
        if progress is not None:
            progress(1, 1, "retargeting", 0.0)
        return CaptureResult(frames=tracked["frames"], fps=tracked["fps"], face_found=found, codes=codes,
                             head_pose=head_pose, basis=basis, weights=weights, codes_raw=raw,
                             landmarks2d=tracked["landmarks2d"], **extra)


@contextmanager
def engine_threads():
    """Torch's CPU threads and the BLAS libraries' (numpy's, scipy's) limited to a quarter of the cores (one on
    a laptop) while the engine runs: decoding and tracking run beside them, and Blender or other work shares the
    machine. Oversubscribed BLAS and OpenMP pools spin and wait; on this 2-core machine a bake ran 2-10 times
    slower with two threads each than with one."""
    import scipy.sparse.linalg  # noqa: F401  (scipy's BLAS loaded now, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threads = max(1, (os.cpu_count() or 1) // 4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def cv_invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    a = np.vstack([transform, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def fill_gaps(values: np.ndarray, found: np.ndarray, how: str = "hold") -> np.ndarray:
    """Frames without a face take the last found value ("hold"; before the first, the first) or a linear
    blend of the found values on either side ("interpolate")."""
    if how not in ("hold", "interpolate"):
        raise ValueError(f"gaps must be 'hold' or 'interpolate', not {how!r}")
    values = np.array(values, np.float32)
    good = np.flatnonzero(found & np.isfinite(values).all(axis=1))
    if len(good) == 0:
        return np.nan_to_num(values)
    positions = np.arange(len(values))
    if how == "interpolate":
        for column in range(values.shape[1]):
            values[:, column] = np.interp(positions, good, values[good, column])
        return values
    source = good[np.clip(np.searchsorted(good, positions, side="right") - 1, 0, None)]
    return values[source]


def smooth_codes(codes: np.ndarray, fps: float, strength: float, found: np.ndarray | None = None) -> np.ndarray:
    """One Euro filter over time with one strength setting (0 = off); restarts after a gap."""
    if strength <= 0:
        return codes.astype(np.float32)
    one_euro = OneEuroFilter(fps, min_cutoff=2.0 / strength, beta=0.5)
    out = np.empty_like(codes, dtype=np.float32)
    for f, code in enumerate(codes):
        if found is not None and not found[f]:
            one_euro.reset()
        out[f] = one_euro(code)
    return out
