"""Re-baking a kept capture result with the animator's controls, without the engine: numpy only, so the add-on
runs it in Blender's own Python in well under a second.

From the result's raw codes (`codes_raw`) and the target's code basis (`code_basis`, decoding is linear):
    gaps filled -> smoothed (One Euro) -> neutral calibration (minus the mean code of the rest frames) ->
    strength (overall and per region, one (D, D) matrix: `strength.py`) -> the shape-key basis (`compress`).
ARKit weights take the same steps on the weights themselves (calibration subtracts the rest frames' weights,
a shape's region multiplier applies to it), then each shape's gain and offset, clipped to [0, 1]; they are
smoothed here only when the result was captured unsmoothed (codes == codes_raw: the add-on captures so, and
smooths at bake time), since a capture's smoothing is already in its weights. The head
rotation can be taken relative to a rest frame (the first, or the calibration's).
With the default controls the result is the engine's own (`Engine.retarget` uses `tuned_codes`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from serep_engine.contract import CaptureResult
from serep_engine.shapekeys.basis import compress
from serep_engine.track.filters import fill_gaps, smooth_codes
from serep_engine.tune.strength import region_of, strength_matrix

HEAD_RESTS = ("none", "first", "neutral")
DEFAULT_TOLERANCE_CM = 0.005  # the capture option's default (contract.CAPTURE_OPTIONS)


class TuningError(ValueError):
    """Controls that do not fit the kept result; the message says why."""


@dataclass
class Tuning:
    smoothing: float = 1.0
    gaps: str = "hold"
    neutral: tuple[int, int] | None = None  # rest frames [start, end) in the clip's frame numbers; None: off
    strength: float = 1.0
    regions: dict[str, float] = field(default_factory=dict)  # REGIONS -> multiplier (1 when absent)
    arkit_gain: dict[str, float] = field(default_factory=dict)  # ARKit name -> gain (1 when absent)
    arkit_offset: dict[str, float] = field(default_factory=dict)  # ARKit name -> offset (0 when absent)
    head_rest: str = "none"  # HEAD_RESTS: the head rotation as it is, or relative to the first / rest frame
    tolerance_cm: float = DEFAULT_TOLERANCE_CM
    max_keys: int | None = None


def _require(result: CaptureResult, *names: str) -> None:
    missing = [name for name in names if getattr(result, name) is None]
    if missing:
        raise TuningError(f"the result lacks {', '.join(missing)}: capture the clip again to re-bake it")


def tuned_codes(codes_raw: np.ndarray, found: np.ndarray, fps: float, tuning: Tuning) -> np.ndarray:
    """Gap filling and smoothing: the steps that the engine's own bake takes too."""
    return smooth_codes(fill_gaps(codes_raw, found, tuning.gaps), fps, tuning.smoothing, found)


def neutral_rows(result: CaptureResult, neutral: tuple[int, int]) -> np.ndarray:
    """Indices (into the result's frames) of the found frames in the rest range [start, end)."""
    start, end = neutral
    rows = np.flatnonzero((result.frames >= start) & (result.frames < end) & result.face_found)
    if len(rows) == 0:
        raise TuningError(f"no frame with a face in the rest frames {start}..{end - 1} "
                          f"(the result has frames {result.frames[0]}..{result.frames[-1]})")
    return rows


def find_neutral(result: CaptureResult, seconds: float = 0.25) -> tuple[int, int]:
    """The clip's most neutral stretch, as rest frames [start, end): the window of `seconds` (only frames with
    a face) whose codes decode to the least displacement on the target and which is the stillest (mean squared
    displacement plus ten times its spread over the window: calibration subtracts the window's mean, so what
    is left on its frames is the spread)."""
    _require(result, "codes_raw", "code_basis")
    flat = result.code_basis.reshape(len(result.code_basis), -1).astype(np.float64)
    gram = flat @ flat.T
    codes = fill_gaps(result.codes_raw, result.face_found, "hold").astype(np.float64)
    energy = np.einsum("fd,de,fe->f", codes, gram, codes) / flat.shape[1]  # mean squared displacement per frame
    width = max(1, min(len(codes), int(round(seconds * result.fps))))
    kernel = np.ones(width) / width
    window_energy = np.convolve(energy, kernel, "valid")
    mean_code = np.stack([np.convolve(codes[:, d], kernel, "valid") for d in range(codes.shape[1])], 1)
    spread = window_energy - np.einsum("fd,de,fe->f", mean_code, gram, mean_code) / flat.shape[1]
    score = window_energy + 10.0 * spread  # a held expression is still but not neutral: both count
    lost = np.convolve((~result.face_found).astype(float), kernel, "valid") > 0
    if lost.all():
        raise TuningError(f"no {seconds:g} s stretch of the clip has a face in every frame")
    score[lost] = np.inf
    first = int(np.argmin(score))
    return int(result.frames[first]), int(result.frames[first + width - 1]) + 1


def retune(result: CaptureResult, tuning: Tuning, codes_only: bool = False) -> CaptureResult:
    """The kept `result` with the controls applied: new codes, shape-key basis and weights, ARKit weights and
    head pose; the raw codes and what a further re-bake needs are kept. `codes_only`: skip the shape-key basis
    (a live preview decodes one frame itself)."""
    _require(result, "codes_raw", "code_basis")
    if tuning.gaps not in ("hold", "interpolate"):
        raise TuningError(f"gaps must be 'hold' or 'interpolate', not {tuning.gaps!r}")
    if tuning.head_rest not in HEAD_RESTS:
        raise TuningError(f"head_rest must be one of {', '.join(HEAD_RESTS)}, not {tuning.head_rest!r}")
    if tuning.regions and result.region_maps is None:
        raise TuningError("the result has no region maps: capture the clip again for per-region strength")
    found = result.face_found
    rows = None if tuning.neutral is None else neutral_rows(result, tuning.neutral)
    codes = tuned_codes(result.codes_raw, found, result.fps, tuning)
    if rows is not None:
        codes = codes - codes[rows].mean(0)
    if result.region_maps is not None:
        codes = codes @ strength_matrix(result.region_maps, tuning.strength, tuning.regions,
                                        [str(n) for n in result.region_names])
    else:
        codes = codes * np.float32(tuning.strength)
    codes = codes.astype(np.float32)
    basis, weights = result.basis, result.weights
    if not codes_only:
        tolerance = tuning.tolerance_cm * (result.target_scale or 1.0)
        basis, weights, _ = compress(result.code_basis, codes, tolerance, tuning.max_keys)
    extra = {}
    if result.arkit_weights is not None:
        extra["arkit_weights"] = _tuned_arkit(result, tuning, rows)
    head_pose = fill_gaps(result.head_pose, found, tuning.gaps)
    if tuning.head_rest != "none":
        if tuning.head_rest == "neutral" and rows is None:
            raise TuningError("the head's rest is the calibration frame, but calibration is off")
        rest = 0 if tuning.head_rest == "first" else int(rows[0])
        head_pose = relative_head_pose(head_pose, rest)
    return dataclasses.replace(result, codes=codes, basis=basis, weights=weights, head_pose=head_pose, **extra)


def _tuned_arkit(result: CaptureResult, tuning: Tuning, rows: np.ndarray | None) -> np.ndarray:
    names = [str(n) for n in result.arkit_names]
    unknown = (set(tuning.arkit_gain) | set(tuning.arkit_offset)) - set(names)
    if unknown:
        raise TuningError(f"gain or offset for shapes the result does not have: {', '.join(sorted(unknown))}")
    if np.array_equal(result.codes, result.codes_raw):  # captured unsmoothed (as the add-on's jobs are)
        weights = tuned_codes(result.arkit_weights, result.face_found, result.fps, tuning)
    else:  # the weights already carry the capture's smoothing and gap filling, which cannot be undone
        weights = result.arkit_weights
    if rows is not None:
        weights = weights - weights[rows].mean(0)
    scale = np.array([tuning.strength * tuning.regions.get(region_of(n), 1.0) * tuning.arkit_gain.get(n, 1.0)
                      for n in names], np.float32)
    offset = np.array([tuning.arkit_offset.get(n, 0.0) for n in names], np.float32)
    return np.clip(weights * scale + offset, 0.0, 1.0).astype(np.float32)


def _rotation_matrices(rotvecs: np.ndarray) -> np.ndarray:
    """(F, 3, 3) from (F, 3) rotation vectors (Rodrigues)."""
    angle = np.linalg.norm(rotvecs, axis=1)
    axis = rotvecs / np.where(angle > 1e-12, angle, 1.0)[:, None]
    x, y, z = axis.T
    cross = np.zeros((len(rotvecs), 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -z, y, -x
    cross -= cross.transpose(0, 2, 1)
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * cross + (1 - c) * cross @ cross


def _rotation_vectors(matrices: np.ndarray) -> np.ndarray:
    """(F, 3) rotation vectors of (F, 3, 3) rotations (via quaternions: stable at every angle)."""
    m = matrices
    w = np.sqrt(np.clip(1 + m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2], 0, None)) / 2
    x = np.copysign(np.sqrt(np.clip(1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2], 0, None)) / 2, m[:, 2, 1] - m[:, 1, 2])
    y = np.copysign(np.sqrt(np.clip(1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2], 0, None)) / 2, m[:, 0, 2] - m[:, 2, 0])
    z = np.copysign(np.sqrt(np.clip(1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2], 0, None)) / 2, m[:, 1, 0] - m[:, 0, 1])
    vector = np.stack([x, y, z], 1)
    sine = np.linalg.norm(vector, axis=1)
    angle = 2 * np.arctan2(sine, w)
    return vector * np.where(sine > 1e-12, angle / np.where(sine > 1e-12, sine, 1.0), 2.0)[:, None]


def relative_head_pose(head_pose: np.ndarray, rest: int) -> np.ndarray:
    """(F, 6) head poses with frame `rest`'s rotation as zero: R_f R_rest^T (the head's turn since the rest
    frame, in the camera's axes); translations relative to the rest frame's."""
    rotations = _rotation_matrices(head_pose[:, :3].astype(np.float64))
    relative = rotations @ rotations[rest].T
    out = np.empty_like(head_pose, dtype=np.float32)
    out[:, :3] = _rotation_vectors(relative)
    out[:, 3:] = head_pose[:, 3:] - head_pose[rest, 3:]
    return out


def frame_displacement(result: CaptureResult, codes: np.ndarray, index: int) -> np.ndarray:
    """(V, 3): one frame's displacement on the target from tuned codes (`retune(..., codes_only=True).codes`)."""
    return np.tensordot(codes[index], result.code_basis, axes=1)

