"""Reading Live Link Face / ARKit takes: the CSV Epic's iPhone app writes (and `retarget/export.py` writes back).

    Timecode,BlendShapeCount,EyeBlinkLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,...,RightEyeRoll
    13:13:04:31.652,61,0.1233,...

What real files hold, and how it is read:
- the count column is `BlendShapeCount` in older app versions and `BlendshapeCount` in newer ones;
- `Timecode` is `HH:MM:SS:FF.fff`, FF a fractional frame at the timecode's own rate (60 in the app's takes),
  while rows may come at another rate (the takes in shared/data: 30 rows a second, FF stepping by 2, and now
  and then a sample skipped). Each row's time is read from its own timecode; the take's rate is the rows'
  median spacing;
- rows where tracking was lost hold only `TIMECODE,0`: they are kept as frames without values (`found`
  False), to be held or interpolated like frames without a face;
- a `take.json` beside the CSV (newer app versions) may give the timecode rate (`"frameRate"`).

A take is a clip both sides of the contract accept (TAKE_SUFFIXES): the engine imports it (`Engine.import_take`),
the add-on shows its rate and rows with this same reader (standard library and numpy only).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serep_engine.contract.arkit import ARKIT_NAMES, arkit_name

ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll", "RightEyeYaw",
             "RightEyePitch", "RightEyeRoll")
TIMECODE_RATES = (24.0, 25.0, 30.0, 48.0, 50.0, 60.0, 100.0, 120.0)


class TakeError(ValueError):
    """A file that is not a Live Link Face take; the message says why."""


@dataclass
class Take:
    times: np.ndarray  # (F,) seconds after the first row, from the timecodes
    fps: float  # the rows' rate
    found: np.ndarray  # (F,) bool: False where tracking was lost (the row has no values)
    weights: np.ndarray  # (F, 52) in ARKIT_NAMES order, NaN where not found
    rotations: np.ndarray  # (F, 9) head yaw, pitch, roll and both eyes' (radians), NaN where not found
    timecode_start: str  # the first row's timecode
    timecode_rate: float  # the rate of the timecode's frame field

    @property
    def n_frames(self) -> int:
        return len(self.times)

    @property
    def start_seconds(self) -> float:
        """The first row's timecode in seconds since midnight (for keeping it as a frame offset)."""
        return timecode_seconds(self.timecode_start, self.timecode_rate)

    def frames(self, fps: float | None = None) -> np.ndarray:
        """(F,) frame numbers of the rows at `fps` (default: the take's own rate), counted from the first row,
        strictly increasing. The phone's clock drifts against the nominal rate (in alex_rom_3 the rows have slid
        half a frame after two minutes), so two rows can round to one frame: the later one then takes the next
        frame, and the row after a skipped sample takes up the slack."""
        frames = np.round(self.times * (fps or self.fps)).astype(np.int64)
        if len(frames) and np.any(np.diff(frames) <= 0):
            frames = np.maximum.accumulate(frames - np.arange(len(frames))) + np.arange(len(frames))
        return frames


def timecode_seconds(timecode: str, rate: float) -> float:
    try:
        hours, minutes, seconds, frame = timecode.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + float(frame) / rate
    except ValueError:
        raise TakeError(f"not a timecode (HH:MM:SS:FF.fff): {timecode!r}") from None


def read_take(path: str | os.PathLike) -> Take:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise TakeError(f"take not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise TakeError(f"not a readable CSV take: {path} ({error})") from None
    if len(rows) < 2:
        raise TakeError(f"{path.name} has no rows after its header")
    header = [name.strip() for name in rows[0]]
    if header[:1] != ["Timecode"] or len(header) < 3 or header[1].lower() != "blendshapecount":
        raise TakeError(f"{path.name} is not a Live Link Face take (its header must start Timecode,BlendShapeCount)")
    shape_columns = {arkit_name(name): i for i, name in enumerate(header[2:], 2) if name not in ROTATIONS}
    shape_columns.pop(None, None)
    missing = [name for name in ARKIT_NAMES if name not in shape_columns]
    if missing:
        raise TakeError(f"{path.name} lacks the ARKit columns {', '.join(missing[:5])}")
    rotation_columns = [header.index(name) if name in header else None for name in ROTATIONS]

    timecodes, values, rotations = [], [], []
    for number, row in enumerate(rows[1:], 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        timecodes.append(row[0])
        if len(row) <= 2 or all(not cell.strip() for cell in row[2:]):  # tracking lost: `TIMECODE,0`
            values.append(np.full(len(ARKIT_NAMES), np.nan))
            rotations.append(np.full(len(ROTATIONS), np.nan))
            continue
        try:
            values.append([float(row[shape_columns[name]]) for name in ARKIT_NAMES])
            rotations.append([np.nan if c is None else float(row[c]) for c in rotation_columns])
        except (IndexError, ValueError):
            raise TakeError(f"{path.name}, line {number}: a row of the wrong length or with a non-number") from None
    rate = _timecode_rate(path, timecodes)
    seconds = np.array([timecode_seconds(t, rate) for t in timecodes])
    if np.any(np.diff(seconds) < 0):  # a take that runs past midnight
        seconds = np.where(seconds < seconds[0], seconds + 86400.0, seconds)
    times = seconds - seconds[0]
    steps = np.diff(times)
    fps = 1.0 / float(np.median(steps[steps > 0])) if np.any(steps > 0) else rate
    weights = np.array(values, np.float32)
    return Take(times=times, fps=_nearest_rate(fps), found=np.isfinite(weights).all(1), weights=weights,
                rotations=np.array(rotations, np.float32), timecode_start=timecodes[0].strip(), timecode_rate=rate)


def _timecode_rate(path: Path, timecodes: list[str]) -> float:
    """The timecode's frame rate: from take.json beside the CSV when it says, else the smallest usual rate
    above every frame field seen."""
    info = path.with_name("take.json")
    if info.is_file():
        try:
            rate = float(json.loads(info.read_text()).get("frameRate", 0))
            if rate > 0:
                return rate
        except (ValueError, TypeError, AttributeError, OSError):
            pass
    try:
        highest = max(float(t.strip().split(":")[3]) for t in timecodes)
    except (IndexError, ValueError):
        raise TakeError(f"{path.name} holds a timecode that is not HH:MM:SS:FF.fff") from None
    return next((rate for rate in TIMECODE_RATES if highest < rate), TIMECODE_RATES[-1])


def _nearest_rate(fps: float) -> float:
    """The measured row rate snapped to a usual one (23.976 ... 120; the NTSC ones exactly, as 24000/1001 ...)
    when it is within 1%."""
    usual = (24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0, 120.0)
    best = min(usual, key=lambda rate: abs(rate - fps))
    return best if abs(best - fps) < 0.01 * fps else round(fps, 3)
