"""The engine's Python API: video (or an ARKit take) in, a capture result (DESIGN.md contract) out.

    engine = Engine.from_pretrained(device="auto")
    character = engine.fit(TargetMesh(vertices, triangles))  # once per mesh; cached on disk too
    result = engine.capture("take.mp4", target=character, progress=print)
    result.save("take.npz")
    engine.import_take(read_take("take.csv"), target=character)  # a Live Link Face take (contract.read_take)

Per frame: the tracking front end (mediapipe landmarks, smoothed similarity crop), the capture model
(crop + landmarks -> SEREP code), head pose from the landmarks. Over the clip: the codes are refined against the
landmarks (capture/refine.py; the `follow_landmarks` option), gaps without a face are
held or interpolated, codes are smoothed (raw codes are kept), decoded onto the target's identity
(the template's neutral without a target), carried to the target's own vertices, and compressed into a
shape-key basis with per-frame weights.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from serep_engine.cache import cached_array
from serep_engine.capture.landmarks68 import LandmarkMap
from serep_engine.contract import CaptureResult, JobOptions, Take, TakeError
from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.device import pick_backend, thread_count
from serep_engine.expression.decoder import ExpressionDecoder
from serep_engine.shapekeys.basis import compress
from serep_engine.track.filters import fill_gaps
from serep_engine.track.tracking import BLENDSHAPE_NAMES
from serep_engine.track.video import VideoInfo, probe
from serep_engine.tune import REGIONS, Tuning, region_maps, tuned_codes

if TYPE_CHECKING:
    from serep_engine.retarget import Registration

ProgressFn = Callable[[int, int, str, float], None]  # (done, total, stage, fps)
REFINE_CHUNK = 900  # faces refined at a time; the first chunk's also gives the actor's face shape (30 s at 30 fps)


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
class CaptureOptions(JobOptions):
    """The user's capture options (contract.CAPTURE_OPTIONS) and how the engine runs them."""

    batch_size: int = 16
    track_workers: int = 1  # processes that decode and track chunks of the clip in parallel (1: threads only)


@dataclass
class FrameCapture:
    found: bool
    code: np.ndarray  # (D,)
    landmarks: np.ndarray  # (478, 3) image pixels (NaN without a face)
    head_pose: np.ndarray  # (6,) rotation vector (rad) + translation (cm), OpenCV camera frame


class Engine:
    """`capture_model`: a torch `CaptureModel` or an ONNX Runtime `OnnxCaptureModel`; `expression_model`: the torch
    `ExpressionModel` or its numpy `ExpressionDecoder` (the engine runs the decoder either way); `device`: "cpu" or
    "cuda" (or a torch device)."""

    def __init__(self, face_model, expression_model, capture_model, device):
        self.face_model = face_model
        self.expression_model = ExpressionDecoder.of(expression_model)
        self.capture_model = capture_model
        self.device = str(getattr(device, "type", device))
        self._live = None
        self._region_maps: np.ndarray | None = None
        self._refiner = None
        self._model_digest: str | None = None  # of the expression model's weights, for the identity-basis cache

    @property
    def backend(self) -> str:
        """"torch" or "onnx": what runs the capture model."""
        return self.capture_model.backend

    @classmethod
    def from_pretrained(cls, device: str = "auto", face_model=None, backend: str = "auto") -> Engine:
        """The shipped models. The backend is picked once (device.pick_backend): torch on a CUDA GPU, else ONNX
        Runtime when installed (the Blender extension ships no torch), else torch on the CPU."""
        from serep_engine.facemodel.ict import ICTModel

        backend, device = pick_backend(device, backend)
        if backend == "onnx":
            from serep_engine.capture.runtime import OnnxCaptureModel

            capture_model = OnnxCaptureModel.from_pretrained(device)
        else:
            from serep_engine.capture.model import CaptureModel

            capture_model = CaptureModel.from_pretrained(device)
        face_model = face_model or ICTModel.load()
        return cls(face_model, ExpressionDecoder.from_pretrained(face_model), capture_model, device)

    def identity_basis(self, neutral: np.ndarray) -> np.ndarray:
        """(D, 9409, 3) float32: the expression model decoded onto one identity (its neutral in template topology),
        cached on disk per model and identity (under $SEREP_CACHE/identity-bases), so that every clip after the
        first on one character skips the sparse factorisation and solve (0.4-1 s on a laptop CPU)."""
        import hashlib

        from serep_engine.paths import cache_dir

        if self._model_digest is None:
            self._model_digest = self.expression_model.digest()
        neutral = np.ascontiguousarray(neutral)
        key = hashlib.sha256(f"{self._model_digest}{neutral.dtype}{neutral.shape}".encode() + neutral.tobytes())
        return cached_array(cache_dir() / "identity-bases" / f"{key.hexdigest()[:32]}.npy",
                            lambda: self.expression_model.identity_basis(neutral))

    # -- per frame (live use) --------------------------------------------------------------------------
    def capture_frame(self, rgb: np.ndarray, fps: float = 30.0) -> FrameCapture:
        """One RGB uint8 frame of a live stream at `fps` (frames in order; tracking and the crop's smoothing
        carry over): the raw code refined against the frame's own landmarks (a clip's `track` fits one identity to all
        its frames and takes the actor's rest off, capture/refine.py: clip_rest; a live frame has no clip to read a
        rest on, so its codes keep it)."""
        from serep_engine.track.frontend import LiveFrontEnd
        from serep_engine.track.pose import HeadPoseEstimator

        if self._live is None:
            self._live = (LiveFrontEnd(fps, self.capture_model.crop_size), HeadPoseEstimator(self.face_model))
        front, pose = self._live
        frame = front(rgb)
        if not frame.found:
            pose.reset()
            return FrameCapture(False, np.zeros(self.capture_model.code_dim, np.float32), frame.landmarks,
                                np.full(6, np.nan, np.float32))
        code = self.capture_model.predict([frame.crop], [frame.crop_landmarks])[0]
        code = self.refiner().refine(frame.landmarks[None], code, shared_identity=False)[0]
        return FrameCapture(True, code, frame.landmarks, pose(frame.landmarks, rgb.shape[:2]))

    def end_live(self) -> None:
        """Ends the live stream `capture_frame` reads: its tracker is closed now (not whenever it is collected) and
        the next frame starts a new stream."""
        if self._live is not None:
            self._live[0].close()
            self._live = None

    def refiner(self):
        """The landmark refinement on the template's code basis (capture/refine.py), made once."""
        from serep_engine.capture.refine import LandmarkRefiner

        if self._refiner is None:
            self._refiner = LandmarkRefiner(self.face_model, self.identity_basis(self.face_model.face_neutral))
        return self._refiner

    # -- whole clips ----------------------------------------------------------------------------------
    def fit(self, target: TargetMesh) -> Registration:
        """The face template fitted to the artist's mesh (retarget/fit.py), its lids closing on a full blink;
        raises when no face is found."""
        from serep_engine.retarget import fit_target
        from serep_engine.retarget.fit import decoded_blinks

        registration = fit_target(self.face_model, target.vertices, target.triangles, target.landmarks)
        bases = (self.identity_basis(self.face_model.face_neutral), self.identity_basis(registration.neutral))
        blinks = decoded_blinks(self.face_model, self.expression_model, registration.neutral, bases)
        return registration.with_closing_lids(self.face_model, blinks)

    def capture(self, video: str | os.PathLike | VideoInfo, start: int = 0, end: int | None = None,
                target: Registration | TargetMesh | None = None, options: CaptureOptions | None = None,
                progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None) -> CaptureResult:
        """The clip's range captured onto `target`: a mesh fitted with `fit` (or fitted here), or None for the
        template's neutral face. `video`: a path, or its probe."""
        options = options or CaptureOptions()
        registration = self.fit(target) if isinstance(target, TargetMesh) else target
        with engine_threads():
            tracked = self.track(video, start, end, options, progress, should_stop)
            return self.retarget(tracked, registration, options, progress)

    def track(self, video: str | os.PathLike | VideoInfo, start: int = 0, end: int | None = None,
              options: CaptureOptions | None = None, progress: ProgressFn | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict:
        """Front end + capture model over the clip's range: per-frame raw codes, landmarks, pose, flags.

        Three stages overlap (OpenCV, mediapipe's graph, torch and ONNX Runtime release the GIL): a thread decodes
        frames ahead, this thread tracks, crops and fits the head pose, and a model thread runs the capture model
        on batches of crops, at most two batches behind. With `options.track_workers` > 1, processes decode
        and track chunks of the clip in parallel instead (track/frontend.py: parallel_front_end)."""
        from serep_engine.track.frontend import front_end, parallel_front_end
        from serep_engine.track.pose import HeadPoseEstimator

        options = options or CaptureOptions()
        info = video if isinstance(video, VideoInfo) else probe(video)
        last = info.frame_count if end is None else min(end, info.frame_count)
        total = max(last - start, 0)
        pose = HeadPoseEstimator(self.face_model)
        landmark_map = LandmarkMap.from_pretrained()
        frames, found, codes, landmarks68, poses, blendshapes, matrices = [], [], [], [], [], [], []
        network_codes: dict[int, np.ndarray] = {}  # position -> the network's own code (for its ARKit keys)
        to_refine: dict[int, np.ndarray] = {}  # position -> mediapipe's points, until the position's code is refined
        rest = None  # the actor's rest (capture/refine.py: ClipRest), from the clip's first REFINE_CHUNK faces
        pending: list = []  # (position, frame) waiting for a batch
        in_flight: deque = deque()  # batches handed to the model thread
        started = time.perf_counter()

        def predict(batch: list) -> None:  # in the model thread; fills positions the tracking thread is past
            predicted, _ = self.capture_model.predict([f.crop for _, f in batch], [f.crop_landmarks for _, f in batch])
            for (position, _), code in zip(batch, predicted):
                codes[position] = network_codes[position] = code

        def flush(keep: int) -> None:
            if pending:
                in_flight.append(model.submit(predict, pending.copy()))
                pending.clear()
            while len(in_flight) > keep:
                in_flight.popleft().result()  # raises the model thread's error here

        def refine() -> None:  # every code handed over is in: refine them (memory stays flat with clip length)
            nonlocal rest
            positions = sorted(to_refine)
            points, network = np.stack([to_refine[p] for p in positions]), np.stack([codes[p] for p in positions])
            if rest is None:
                rest = self.refiner().clip_rest(points, network, np.stack([blendshapes[p] for p in positions]))
            for position, code in zip(positions, self.refiner().refine(points, network, rest=rest)):
                codes[position] = code
            to_refine.clear()

        if options.track_workers > 1:  # crops come at the network's input size (the same pixels predict makes)
            stream = parallel_front_end(info, start, end, options.track_workers, self.capture_model.crop_size,
                                        self.capture_model.config.source_size)
        else:
            stream = front_end(info, start, end, crop_size=self.capture_model.crop_size)
        with engine_threads(), ThreadPoolExecutor(1, thread_name_prefix="serep-model") as model:
            try:
                for frame in stream:
                    if should_stop is not None and should_stop():
                        raise Cancelled("capture cancelled")
                    position = len(frames)
                    frames.append(frame.index)
                    found.append(frame.found)
                    blendshapes.append(frame.observation.blendshapes)
                    matrices.append(frame.observation.matrix)
                    codes.append(None)
                    landmarks68.append(np.full((68, 2), np.nan, np.float32))
                    if frame.found:
                        landmarks68[-1] = landmark_map(frame.landmarks)
                        poses.append(pose(frame.landmarks, (info.height, info.width)))
                        pending.append((position, frame))
                        if options.follow_landmarks:
                            to_refine[position] = frame.landmarks
                        if len(pending) >= options.batch_size:
                            flush(keep=2)
                        if len(to_refine) >= REFINE_CHUNK:
                            flush(keep=0)
                            refine()
                    else:
                        pose.reset()
                        poses.append(np.full(6, np.nan, np.float32))
                    if progress is not None and (len(frames) % 10 == 0 or len(frames) == total):
                        progress(len(frames), total, "tracking",
                                 len(frames) / max(time.perf_counter() - started, 1e-6))
                flush(keep=0)
                if to_refine:
                    refine()
            finally:
                stream.close()  # now, not when garbage is collected: the decode thread or tracking processes stop
                for job in in_flight:
                    job.cancel()
        if not frames:
            raise ValueError(f"no frames in the range {start}..{end} of {info.path}")
        found = np.array(found, bool)
        if not found.any():
            raise NoFaceError(f"no face was found in any of the {len(frames)} frames of {info.path}")
        dim = self.capture_model.code_dim
        raw = np.array([c if c is not None else np.full(dim, np.nan) for c in codes], np.float32)
        tracked = {"frames": np.array(frames), "fps": info.fps, "face_found": found, "codes_raw": raw,
                   "landmarks2d": np.stack(landmarks68).astype(np.float32), "head_pose": np.stack(poses),
                   "tracker_blendshapes": np.stack(blendshapes), "tracker_matrix": np.stack(matrices)}
        if options.follow_landmarks:
            tracked["codes_network"] = np.array([network_codes.get(p, np.full(dim, np.nan))
                                                 for p in range(len(frames))], np.float32)
        return tracked

    def import_take(self, take: Take, target: Registration | TargetMesh | None = None,
                    options: CaptureOptions | None = None, start: int = 0, end: int | None = None,
                    progress: ProgressFn | None = None) -> CaptureResult:
        """A Live Link Face / ARKit take (contract/takes.py) as a capture result on `target`, like `capture`'s of a
        clip: each found row's ARKit weights blend ICT's expression shapes on the template, E_exp encodes the blend
        into a SEREP code, head yaw/pitch/roll become the head pose, and `retarget` does the rest as for captured
        clips (lost rows held or interpolated, codes smoothed, decoded onto the target, the shape-key basis). The
        result's ARKit weights are the take's own, lost rows filled as the gaps option says and smoothed as the codes
        are (as a captured clip's weights carry its codes' smoothing; smoothing 0 bakes exactly what the phone
        recorded); only values outside ARKit's documented [0, 1] are clipped (real takes hold a few, eyeLookIn up to
        1.08, which the result contract and a shape key's slider do not take).
        `start`/`end`: the take's frames (at its own rate) to keep."""
        from serep_engine.retarget.export import head_pose_of_angles

        options = options or CaptureOptions()
        registration = self.fit(target) if isinstance(target, TargetMesh) else target
        if np.any(np.diff(take.times) <= 0):
            row = int(np.flatnonzero(np.diff(take.times) <= 0)[0]) + 1
            raise TakeError(f"rows {row} and {row + 1} of the take have one timecode (or are out of order)")
        frames = take.frames()
        keep = (frames >= start) & (frames < (frames[-1] + 1 if end is None else end))
        if not keep.any():
            raise ValueError(f"the take has no rows in the frames {start}..{end} (it has {frames[-1] + 1})")
        found = take.found[keep]
        if not found.any():
            raise NoFaceError(f"tracking was lost on all {int(keep.sum())} rows of the take")
        if progress is not None:
            progress(int(keep.sum()), int(keep.sum()), "reading the take", 0.0)
        weights = np.clip(take.weights[keep], 0.0, 1.0)  # NaN (lost rows) stays NaN
        tracked = {"frames": frames[keep], "fps": take.fps, "face_found": found,
                   "codes_raw": (weights @ self.arkit_codes()).astype(np.float32),  # NaN on lost rows
                   "head_pose": head_pose_of_angles(take.rotations[keep, :3]), "arkit_weights": weights}
        with engine_threads():
            return self.retarget(tracked, registration, options, progress)

    def arkit_codes(self) -> np.ndarray:
        """(52, D): the SEREP code of each ARKit shape (ICT's expression shapes; split halves summed, tongueOut
        zero) on the template, by E_exp. E_exp is linear (a least-squares inverse), so a blend of the shapes
        encodes to the same blend of these codes."""
        from serep_engine.retarget.arkit import arkit_shapes

        shapes = arkit_shapes(self.face_model, self.face_model.face_expression_basis)
        basis = self.identity_basis(self.face_model.face_neutral)
        return self.expression_model.encode_displacements(shapes.astype(np.float32), basis)

    def retarget(self, tracked: dict, registration: Registration | None, options: CaptureOptions,
                 progress: ProgressFn | None = None) -> CaptureResult:
        """Fill gaps, smooth, decode onto the fitted target (None: the template) and compress into a shape-key
        basis. ARKit weights in `tracked` (a take's) are kept, gaps filled and smoothed; else `options.arkit` solves
        them from the smoothed codes, with the network's own codes and the tracker's scores as second readings of
        some keys (retarget/arkit.py: fused_keys). The result keeps what a re-bake needs (`tune`): the raw codes, the
        target's code basis, the region maps."""
        found = tracked["face_found"]
        tuning = Tuning(smoothing=options.smoothing, gaps=options.gaps)
        raw = fill_gaps(tracked["codes_raw"], found, options.gaps)
        codes = tuned_codes(raw, found, tracked["fps"], tuning)
        head_pose = fill_gaps(tracked["head_pose"], found, options.gaps)
        if progress is not None:
            progress(0, 1, "retargeting", 0.0)
        if registration is None:
            template_basis = user_basis = self.identity_basis(self.face_model.face_neutral)
        else:
            template_basis = self.identity_basis(registration.neutral)
            user_basis = registration.to_user(template_basis)
        tolerance = options.tolerance_cm * (1.0 if registration is None else registration.scale_to_user)
        basis, weights, _ = compress(user_basis, codes, tolerance, options.max_keys)
        extra = {}
        if "arkit_weights" in tracked:
            take_weights = tuned_codes(tracked["arkit_weights"], found, tracked["fps"], tuning)
            extra = {"arkit_names": np.array(ARKIT_NAMES), "arkit_weights": np.clip(take_weights, 0.0, 1.0)}
        elif options.arkit:
            from serep_engine.retarget.arkit import ARKitSolver, fused_keys, head_yaw, tracker_keys

            neutral = self.face_model.face_neutral if registration is None else registration.neutral
            solver = ARKitSolver(self.face_model, neutral)
            gaze = tracker = yaw = None  # the tracker's scores and head turn, gaps filled and smoothed as the codes are
            if "tracker_blendshapes" in tracked:
                tracker = tuned_codes(tracker_keys(tracked["tracker_blendshapes"]), found, tracked["fps"], tuning)
                gaze = tracker[:, solver.gaze]  # the eyes' turn is the tracker's (its irises)
                yaw = tuned_codes(head_yaw(tracked["tracker_matrix"])[:, None], found, tracked["fps"], tuning)[:, 0]

            def keys(codes: np.ndarray) -> np.ndarray:
                """A block of frames at a time: a long take's (F, 9409, 3) displacements would not fit in memory."""
                return np.concatenate([solver.solve(np.tensordot(codes[first:first + 256], template_basis, axes=1),
                                                    None if gaze is None else gaze[first:first + 256])
                                       for first in range(0, len(codes), 256)])

            arkit = keys(codes)
            if "codes_network" in tracked:  # second readings: the network's own codes' keys, the tracker's scores
                arkit = fused_keys(arkit, keys(tuned_codes(tracked["codes_network"], found, tracked["fps"], tuning)),
                                   tracker, yaw)
            extra = {"arkit_names": np.array(solver.names), "arkit_weights": arkit}
        if "tracker_blendshapes" in tracked:
            extra.update(tracker_blendshapes=tracked["tracker_blendshapes"],
                         tracker_blendshape_names=np.array(BLENDSHAPE_NAMES), tracker_matrix=tracked["tracker_matrix"])
        if progress is not None:
            progress(1, 1, "retargeting", 0.0)
        return CaptureResult(frames=tracked["frames"], fps=tracked["fps"], face_found=found, codes=codes,
                             head_pose=head_pose, basis=basis, weights=weights, codes_raw=raw,
                             landmarks2d=tracked.get("landmarks2d"), **extra, **self._rebake_arrays(options,
                                                                                                  user_basis,
                                                                                                  registration))

    def _rebake_arrays(self, options: CaptureOptions, user_basis: np.ndarray, registration) -> dict:
        """What a re-bake needs (the `rebake` option): the target's code basis, the region maps, its scale."""
        if not options.rebake:
            return {}
        return {"code_basis": user_basis, "region_names": np.array(REGIONS), "region_maps": self.region_maps(),
                "target_scale": 1.0 if registration is None else registration.scale_to_user}

    def region_maps(self) -> np.ndarray:
        """(5, D, D): the part of a code each face region's ARKit shapes carry (tune/strength.py); cached."""
        if self._region_maps is None:
            template_basis = self.identity_basis(self.face_model.face_neutral)
            self._region_maps = region_maps(self.arkit_codes(), ARKIT_NAMES, template_basis)
        return self._region_maps


@contextmanager
def engine_threads():
    """Torch's CPU threads (when torch is loaded) and the BLAS libraries' (numpy's, scipy's) limited to
    `device.thread_count()`, a quarter of the cores (one on a laptop), while the engine runs: decoding and tracking
    run beside them, and Blender or other work shares the machine. Oversubscribed BLAS and OpenMP pools spin and
    wait; on this 2-core machine a bake ran 2-10 times slower with two threads each than with one. ONNX Runtime's
    sessions are made with that many threads (capture/runtime.py)."""
    import scipy.sparse.linalg  # noqa: F401  (scipy's BLAS loaded now, so that the limit reaches it)
    from threadpoolctl import threadpool_limits

    threads = thread_count()
    torch = sys.modules.get("torch")  # never imported here: the ONNX backend runs without it
    before = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)
