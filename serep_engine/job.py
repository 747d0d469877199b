"""The job file the add-on hands to the worker (DESIGN.md): plain JSON, never pickled, checked field by field.

    {"version": 1, "clip": "/takes/a.mp4", "frame_start": 0, "frame_end": 60,
     "target": "/tmp/serep/target.npz", "output": "/tmp/serep/a.npz", "device": "auto",
     "options": {"smoothing": 1.0, "gaps": "hold", "tolerance_cm": 0.005, "max_keys": null, "arkit": false},
     "shape_keys": ["Basis", "jawOpen"]}

Relative paths are taken relative to the job file's folder. `target` may be null (the template's neutral
face); `frame_end` may be null (to the clip's end); `shape_keys` names the target's existing shape keys, so
that the worker can tell the add-on which of them are ARKit shapes. Unknown fields are refused, so a typo
cannot silently fall back to a default.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERSION = 1
DEVICES = ("auto", "cpu", "cuda")
GAPS = ("hold", "interpolate")


class JobFileError(ValueError):
    """A job file that is missing, not JSON, or not what the schema says."""


@dataclass
class JobOptions:
    smoothing: float = 1.0
    gaps: str = "hold"
    tolerance_cm: float = 0.005
    max_keys: int | None = None
    arkit: bool = False


@dataclass
class Job:
    clip: Path
    output: Path
    target: Path | None = None
    frame_start: int = 0
    frame_end: int | None = None
    device: str = "auto"
    options: JobOptions = field(default_factory=JobOptions)
    shape_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(version=VERSION, clip=str(self.clip), output=str(self.output),
                    target=None if self.target is None else str(self.target))
        return data

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Job:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JobFileError(f"job file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise JobFileError(f"not a readable JSON job file: {path} ({error})") from None
        return cls.from_dict(data, base=path.parent)

    @classmethod
    def from_dict(cls, data, base: str | os.PathLike = ".") -> Job:
        """Validate `data` (a parsed job file) and resolve its paths against `base`."""
        base = Path(base)
        if not isinstance(data, dict):
            raise JobFileError("a job file holds one JSON object")
        known = {"version", "clip", "output", "target", "frame_start", "frame_end", "device", "options", "shape_keys"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobFileError(f"unknown job fields: {', '.join(unknown)}")
        if data.get("version") != VERSION:
            raise JobFileError(f"job version must be {VERSION}, got {data.get('version')!r}")
        for name in ("clip", "output"):
            if name not in data:
                raise JobFileError(f"job lacks '{name}'")

        clip = _path(data["clip"], "clip", base)
        if not clip.is_file():
            raise JobFileError(f"clip not found: {clip}" if not clip.exists() else f"clip is not a file: {clip}")
        target = None if data.get("target") is None else _path(data["target"], "target", base)
        if target is not None and (target.suffix != ".npz" or not target.is_file()):
            raise JobFileError(f"target must be an existing .npz mesh file: {target}")
        output = _path(data["output"], "output", base)
        if output.suffix != ".npz":
            raise JobFileError(f"output must be an .npz file: {output}")
        if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
            raise JobFileError(f"output folder does not exist or is not writable: {output.parent}")
        if output.resolve() in {clip.resolve(), None if target is None else target.resolve()}:
            raise JobFileError(f"output would overwrite an input: {output}")

        start = _integer(data.get("frame_start", 0), "frame_start")
        end = data.get("frame_end")
        end = None if end is None else _integer(end, "frame_end")
        if start < 0 or (end is not None and end <= start):
            raise JobFileError(f"empty or negative frame range [{start}, {end})")
        device = data.get("device", "auto")
        if device not in DEVICES:
            raise JobFileError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
        shape_keys = data.get("shape_keys", [])
        if not isinstance(shape_keys, list) or not all(isinstance(name, str) for name in shape_keys):
            raise JobFileError("shape_keys must be a list of names")
        return cls(clip=clip, output=output, target=target, frame_start=start, frame_end=end, device=device,
                   options=_options(data.get("options", {})), shape_keys=shape_keys)


def _path(value, name: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise JobFileError(f"'{name}' must be a non-empty path string")
    if "\0" in value:
        raise JobFileError(f"'{name}' holds a NUL character")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~someone" with no such user (found by benchmarks/fuzz_parsers.py)
        raise JobFileError(f"'{name}' names the home folder of an unknown user: {value}") from None
    path = path if path.is_absolute() else base / path
    try:
        path.exists()
    except OSError as error:  # e.g. a name longer than the file system allows (found by the fuzz test)
        raise JobFileError(f"'{name}' is not a usable path ({error.strerror}): {str(path)[:120]}...") from None
    return path


def _integer(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobFileError(f"'{name}' must be an integer, got {value!r}")
    return value


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise JobFileError(f"'options.{name}' must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _options(data) -> JobOptions:
    if not isinstance(data, dict):
        raise JobFileError("'options' must be an object")
    unknown = sorted(set(data) - set(JobOptions.__dataclass_fields__))
    if unknown:
        raise JobFileError(f"unknown job options: {', '.join(unknown)}")
    options = JobOptions()
    if "smoothing" in data:
        options.smoothing = _number(data["smoothing"], "smoothing", 0.0, 100.0)
    if "tolerance_cm" in data:
        options.tolerance_cm = _number(data["tolerance_cm"], "tolerance_cm", 0.0, 10.0)
    if "gaps" in data:
        if data["gaps"] not in GAPS:
            raise JobFileError(f"'options.gaps' must be one of {', '.join(GAPS)}, got {data['gaps']!r}")
        options.gaps = data["gaps"]
    if data.get("max_keys") is not None:
        options.max_keys = _integer(data["max_keys"], "options.max_keys")
        if options.max_keys < 1:
            raise JobFileError("'options.max_keys' must be at least 1")
    if "arkit" in data:
        if not isinstance(data["arkit"], bool):
            raise JobFileError("'options.arkit' must be true or false")
        options.arkit = data["arkit"]
    return options
