"""The capture result file (DESIGN.md contract): what the engine hands to the add-on.

An `.npz` (never pickled) with
    frames (F,) int, fps (), face_found (F,) bool, codes (F, D), head_pose (F, 6),
    basis (K, V, 3) float32 displacements on the target mesh's vertices, weights (F, K),
and optionally arkit_names (52,) str, arkit_weights (F, 52), landmarks2d (F, L, 2) image pixels,
codes_raw (F, D): the codes before temporal smoothing (frames without a face filled as the gaps option
says). What a re-bake without the engine needs (`serep_engine/tune`): code_basis (D, V, 3), the target's
displacement per code unit (decoding is linear: a frame's displacement is codes[f] @ code_basis), and
region_names (R,) str with region_maps (R, D, D), the part of a code each face region's ARKit shapes carry
(codes @ region_maps[r]; see `tune/strength.py`), and target_scale (), the target's units per template
centimetre (shape-key tolerances are stated in the template's cm); and what the tracker (mediapipe's Face
Landmarker) itself read per frame, NaN without a face: tracker_blendshapes (F, 52) scores in [0, 1] named by
tracker_blendshape_names (52,) str (`_neutral` and 51 ARKit names; no tongueOut), tracker_matrix (F, 4, 4) its
facial transformation matrix (canonical face in cm -> camera; in a 4K search window, that window's camera).
head_pose is a rotation vector (radians) and a translation (cm) in OpenCV's camera frame (x right, y down,
z forward).
Per frame, the displacement of the target is weights[f] @ basis. `load` validates everything it reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from serep_engine.cache import write_atomically

OPTIONAL = ("arkit_names", "arkit_weights", "landmarks2d", "codes_raw", "code_basis", "region_names",
            "region_maps", "target_scale", "tracker_blendshapes", "tracker_blendshape_names", "tracker_matrix")
# numpy dtype kinds; the rest are real numbers
KINDS = {"frames": "iu", "face_found": "b", "arkit_names": "U", "region_names": "U", "tracker_blendshape_names": "U"}


class ResultFileError(ValueError):
    """A result file that is missing, unreadable or not what the contract says."""


@dataclass
class CaptureResult:
    frames: np.ndarray
    fps: float
    face_found: np.ndarray
    codes: np.ndarray
    head_pose: np.ndarray
    basis: np.ndarray
    weights: np.ndarray
    arkit_names: np.ndarray | None = None
    arkit_weights: np.ndarray | None = None
    landmarks2d: np.ndarray | None = None
    codes_raw: np.ndarray | None = None
    code_basis: np.ndarray | None = None
    region_names: np.ndarray | None = None
    region_maps: np.ndarray | None = None
    target_scale: float | None = None
    tracker_blendshapes: np.ndarray | None = None
    tracker_blendshape_names: np.ndarray | None = None
    tracker_matrix: np.ndarray | None = None

    def __post_init__(self):
        self.frames = np.asarray(self.frames, np.int64)
        self.fps = float(np.asarray(self.fps).reshape(()))  # a (1,) array read back from a file is one number too
        self.face_found = np.asarray(self.face_found, bool)
        self.codes = np.asarray(self.codes, np.float32)
        self.head_pose = np.asarray(self.head_pose, np.float32)
        self.basis = np.asarray(self.basis, np.float32)
        self.weights = np.asarray(self.weights, np.float32)
        self.validate()

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def displacements(self, frame_index: int) -> np.ndarray:
        """(V, 3) displacement of the target at one frame (by position in `frames`)."""
        return np.tensordot(self.weights[frame_index], self.basis, axes=1)

    def validate(self) -> None:
        def check(condition: bool, message: str) -> None:
            if not condition:
                raise ResultFileError(message)

        check(self.frames.ndim == 1 and len(self.frames) > 0, "frames must be a non-empty 1-D array")
        f = len(self.frames)
        check(bool(np.all(np.diff(self.frames) > 0)), "frames must be strictly increasing")
        check(np.isfinite(self.fps) and 0 < self.fps <= 1000, f"fps must be in (0, 1000], got {self.fps}")
        check(self.face_found.shape == (f,), f"face_found must have shape ({f},)")
        check(self.codes.ndim == 2 and len(self.codes) == f, f"codes must have shape ({f}, D)")
        check(self.head_pose.shape == (f, 6), f"head_pose must have shape ({f}, 6)")
        check(self.basis.ndim == 3 and self.basis.shape[2] == 3, "basis must have shape (K, V, 3)")
        check(self.weights.shape == (f, len(self.basis)), f"weights must have shape ({f}, {len(self.basis)})")
        for name in ("codes", "head_pose", "basis", "weights"):
            check(bool(np.isfinite(getattr(self, name)).all()), f"{name} holds NaN or infinite values")
        if self.arkit_weights is not None:
            self.arkit_weights = np.asarray(self.arkit_weights, np.float32)
            self.arkit_names = np.asarray(self.arkit_names, str)
            check(self.arkit_names.ndim == 1 and self.arkit_weights.shape == (f, len(self.arkit_names)),
                  "arkit_names must be 1-D and arkit_weights (F, len(arkit_names))")
            check(bool(((self.arkit_weights >= 0) & (self.arkit_weights <= 1)).all()),
                  "arkit_weights must be in [0, 1]")
        if self.landmarks2d is not None:
            self.landmarks2d = np.asarray(self.landmarks2d, np.float32)
            check(self.landmarks2d.ndim == 3 and self.landmarks2d.shape[0] == f and self.landmarks2d.shape[2] == 2,
                  "landmarks2d must have shape (F, L, 2)")
        if self.codes_raw is not None:
            self.codes_raw = np.asarray(self.codes_raw, np.float32)
            check(self.codes_raw.shape == self.codes.shape, "codes_raw must have the shape of codes")
        d = self.codes.shape[1]
        if self.code_basis is not None:
            self.code_basis = np.asarray(self.code_basis, np.float32)
            check(self.code_basis.shape == (d, self.basis.shape[1], 3), "code_basis must have shape (D, V, 3)")
            check(bool(np.isfinite(self.code_basis).all()), "code_basis holds NaN or infinite values")
        check((self.region_names is None) == (self.region_maps is None),
              "region_names and region_maps come together")
        if self.target_scale is not None:
            check(np.size(self.target_scale) == 1, "target_scale must be one number")
            self.target_scale = float(np.asarray(self.target_scale).reshape(()))
            check(np.isfinite(self.target_scale) and self.target_scale > 0, "target_scale must be positive")
        if self.region_maps is not None:
            self.region_names = np.asarray(self.region_names, str)
            self.region_maps = np.asarray(self.region_maps, np.float32)
            check(self.region_names.ndim == 1 and self.region_maps.shape == (len(self.region_names), d, d),
                  "region_names must be 1-D and region_maps (R, D, D)")
            check(bool(np.isfinite(self.region_maps).all()), "region_maps holds NaN or infinite values")
        check((self.tracker_blendshapes is None) == (self.tracker_blendshape_names is None),
              "tracker_blendshapes and tracker_blendshape_names come together")
        if self.tracker_blendshapes is not None:
            self.tracker_blendshapes = np.asarray(self.tracker_blendshapes, np.float32)
            self.tracker_blendshape_names = np.asarray(self.tracker_blendshape_names, str)
            check(self.tracker_blendshapes.shape == (f, len(self.tracker_blendshape_names)),
                  "tracker_blendshapes must be (F, len(tracker_blendshape_names))")
        if self.tracker_matrix is not None:
            self.tracker_matrix = np.asarray(self.tracker_matrix, np.float32)
            check(self.tracker_matrix.shape == (f, 4, 4), f"tracker_matrix must have shape ({f}, 4, 4)")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a failed write leaves no partial result behind."""
        path = Path(path)
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        arrays["fps"] = np.float64(self.fps)
        if self.target_scale is not None:
            arrays["target_scale"] = np.float64(self.target_scale)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # closed even when the disk fills up mid-write
                np.savez(handle, **arrays)

        return write_atomically(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CaptureResult:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            raise ResultFileError(f"result file not found: {path}") from None
        except Exception as error:  # damaged archives raise many kinds (zip, zlib, npy header); never unpickled
            message = " ".join(str(error).split())[:200]
            raise ResultFileError(f"not a readable result file: {path} ({message or type(error).__name__})") from None
        if not isinstance(arrays, dict):  # a single .npy array rather than an .npz archive
            raise ResultFileError(f"not a result file (.npz of named arrays): {path}")
        required = [f.name for f in fields(cls) if f.name not in OPTIONAL]
        missing = [name for name in required if name not in arrays]
        if missing:
            raise ResultFileError(f"result file {path} lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        arrays = {name: value for name, value in arrays.items() if name in known}
        for name, value in arrays.items():
            kinds = KINDS.get(name, "iuf")
            if value.dtype.kind not in kinds:
                raise ResultFileError(f"{name} in {path} has the wrong type ({value.dtype})")
        if arrays["fps"].size != 1:
            raise ResultFileError(f"fps in {path} must be one number")
        if ("arkit_names" in arrays) != ("arkit_weights" in arrays):
            raise ResultFileError(f"result file {path} has only one of arkit_names and arkit_weights")
        return cls(**arrays)
