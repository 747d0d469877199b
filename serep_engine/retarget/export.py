"""ARKit weights out of a capture result: a Live Link Face CSV (the layout Epic's iPhone app writes) and JSON.

CSV: `Timecode,BlendShapeCount,<52 ARKit names in PascalCase>,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,...,
RightEyeRoll`, one row per frame. Timecode is the row's time (frame / fps seconds) as `HH:MM:SS:FF.mmm`, FF the
fraction of the second in frames at the rate rounded to a whole number: the frame within the second at 24, 25, 30,
... fps, a fractional one at 23.976, 29.97 or 59.94 fps (the app writes clock time too), so that reading the take
back (`contract/takes.py`) finds the rows' own rate. BlendShapeCount is 61 (the columns after it). Head angles are
radians, taken from the result's head pose (rotation vector in OpenCV camera axes) as intrinsic Y-X-Z Euler angles
(yaw about the vertical axis, pitch about the horizontal one, roll about the view axis; 0 facing the camera);
`head_pose_of_angles` is the inverse. The engine estimates no gaze, so the eye angles are 0 (gaze still shows in
the eyeLook* weights).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from serep_engine.cache import write_atomically
from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.contract.takes import ROTATIONS

# Live Link Face's own column order (it lists JawRight before JawLeft and MouthRight before MouthLeft).
LIVELINK_SHAPES = (
    "EyeBlinkLeft", "EyeLookDownLeft", "EyeLookInLeft", "EyeLookOutLeft", "EyeLookUpLeft", "EyeSquintLeft",
    "EyeWideLeft", "EyeBlinkRight", "EyeLookDownRight", "EyeLookInRight", "EyeLookOutRight", "EyeLookUpRight",
    "EyeSquintRight", "EyeWideRight", "JawForward", "JawRight", "JawLeft", "JawOpen", "MouthClose", "MouthFunnel",
    "MouthPucker", "MouthRight", "MouthLeft", "MouthSmileLeft", "MouthSmileRight", "MouthFrownLeft",
    "MouthFrownRight", "MouthDimpleLeft", "MouthDimpleRight", "MouthStretchLeft", "MouthStretchRight",
    "MouthRollLower", "MouthRollUpper", "MouthShrugLower", "MouthShrugUpper", "MouthPressLeft", "MouthPressRight",
    "MouthLowerDownLeft", "MouthLowerDownRight", "MouthUpperUpLeft", "MouthUpperUpRight", "BrowDownLeft",
    "BrowDownRight", "BrowInnerUp", "BrowOuterUpLeft", "BrowOuterUpRight", "CheekPuff", "CheekSquintLeft",
    "CheekSquintRight", "NoseSneerLeft", "NoseSneerRight", "TongueOut",
)
LIVELINK_HEADER = ("Timecode", "BlendShapeCount", *LIVELINK_SHAPES, *ROTATIONS)


class ExportError(ValueError):
    """A result that carries no ARKit weights, or weights that do not name the ARKit shapes."""


def _weights_by_name(names, weights) -> np.ndarray:
    """(F, 52) in ARKIT_NAMES order from a result's arkit_names / arkit_weights."""
    if names is None or weights is None:
        raise ExportError("the result has no ARKit weights: capture with the ARKit option (--arkit) first")
    column = {str(name).lower(): i for i, name in enumerate(names)}
    missing = [name for name in ARKIT_NAMES if name.lower() not in column]
    if missing:
        raise ExportError(f"the result's ARKit weights lack {', '.join(missing[:5])}")
    return np.asarray(weights, np.float32)[:, [column[name.lower()] for name in ARKIT_NAMES]]


def head_angles(head_pose: np.ndarray) -> np.ndarray:
    """(F, 3) yaw, pitch, roll (radians) of (F, 6) head poses (rotation vector + translation); 0 where NaN."""
    from scipy.spatial.transform import Rotation

    rotvec = np.nan_to_num(np.asarray(head_pose, np.float64)[:, :3])
    return Rotation.from_rotvec(rotvec).as_euler("YXZ")


def head_pose_of_angles(angles: np.ndarray) -> np.ndarray:
    """(F, 6) head poses (rotation vector, zero translation) of (F, 3) yaw, pitch, roll: `head_angles` inverted;
    0 where NaN."""
    from scipy.spatial.transform import Rotation

    pose = np.zeros((len(angles), 6), np.float32)
    pose[:, :3] = Rotation.from_euler("YXZ", np.nan_to_num(np.asarray(angles, np.float64))).as_rotvec()
    return pose


def timecode(frame: int, fps: float) -> str:
    """The time of a frame at `fps` as HH:MM:SS:FF.mmm, FF counted at the whole rate nearest `fps`."""
    rate = max(int(round(fps)), 1)
    milli_frames = int(round(int(frame) / fps * rate * 1000))  # the time in thousandths of a frame at `rate`
    seconds, sub = divmod(milli_frames, rate * 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}:{sub // 1000:02d}.{sub % 1000:03d}"


def _write_atomically(path: Path, write) -> Path:
    def write_text(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            write(handle)

    return write_atomically(path, write_text)


def write_livelink_csv(path, frames, fps, names, weights, head_pose=None) -> Path:
    """A Live Link Face CSV of per-frame ARKit weights (see the module docstring)."""
    ordered = _weights_by_name(names, weights)
    index = {name.lower(): i for i, name in enumerate(ARKIT_NAMES)}
    columns = [index[name.lower()] for name in LIVELINK_SHAPES]
    angles = head_angles(head_pose) if head_pose is not None else np.zeros((len(ordered), 3))

    def write(handle):
        writer = csv.writer(handle)
        writer.writerow(LIVELINK_HEADER)
        for frame, row, (yaw, pitch, roll) in zip(frames, ordered, angles, strict=True):
            values = [f"{v:.6f}" for v in row[columns]] + [f"{a:.6f}" for a in (yaw, pitch, roll)] + ["0"] * 6
            writer.writerow([timecode(frame, fps), len(LIVELINK_SHAPES) + len(ROTATIONS), *values])

    return _write_atomically(path, write)


def write_weights_json(path, frames, fps, names, weights) -> Path:
    """{"fps", "names" (52, Apple's order), "absent" (never driven), "frames", "weights" (F x 52)}."""
    ordered = _weights_by_name(names, weights)
    document = {"fps": float(fps), "names": list(ARKIT_NAMES), "absent": ["tongueOut"],
                "frames": [int(f) for f in frames], "weights": np.round(ordered, 6).tolist()}
    return _write_atomically(path, lambda handle: json.dump(document, handle))


def export_result(result_path, livelink=None, json_path=None) -> dict:
    """Write the ARKit weights of a result file as a Live Link Face CSV and/or JSON."""
    from serep_engine.contract.result import CaptureResult

    if livelink is None and json_path is None:
        raise ExportError("nothing to write: give --livelink OUT.csv and/or --json OUT.json")
    result = CaptureResult.load(result_path)
    written = {}
    if livelink is not None:
        written["livelink"] = str(write_livelink_csv(livelink, result.frames, result.fps, result.arkit_names,
                                                     result.arkit_weights, result.head_pose))
    if json_path is not None:
        written["json"] = str(write_weights_json(json_path, result.frames, result.fps, result.arkit_names,
                                                 result.arkit_weights))
    return {**written, "frames": result.n_frames}
