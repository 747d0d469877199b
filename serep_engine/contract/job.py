"""The job file the add-on hands to the worker (DESIGN.md): plain JSON, never pickled, checked field by field.

    {"version": 1, "clip": "/takes/a.mp4", "frame_start": 0, "frame_end": 60,
     "target": "/tmp/serep/target.npz", "output": "/tmp/serep/a.npz", "device": "auto",
     "options": {"smoothing": 1.0, "gaps": "hold", "tolerance_cm": 0.005, "max_keys": null, "arkit": false,
                 "rebake": false},
     "shape_keys": ["Basis", "jawOpen"]}

Relative paths are taken relative to the job file's folder. `target` may be null (the template's neutral
face); `frame_end` may be null (to the clip's end); `shape_keys` names the target's existing shape keys, so
that the worker can tell the add-on which of them are ARKit shapes. Unknown fields are refused, so a typo
cannot silently fall back to a default.

The capture options are declared once, in `CAPTURE_OPTIONS` (name, default, range or choices, help): the job's
`options` and the `serep capture` / `serep batch` flags are made from them, and the add-on's Smoothing and Face
Lost controls (applied at bake time there: its jobs ask for raw codes, `rebake` on).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, make_dataclass
from pathlib import Path

VERSION = 1
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Option:
    """One capture setting. `choices` are (value, description) pairs; `low`/`high` bound a number."""

    name: str
    default: float | int | bool | str | None
    label: str
    help: str
    kind: type = float
    low: float | None = None
    high: float | None = None
    choices: tuple[tuple[str, str], ...] = ()

    def check(self, value):
        """`value` as the option's type, or JobFileError saying what is allowed."""
        where = f"'options.{self.name}'"
        if self.choices:
            if value not in [choice for choice, _ in self.choices]:
                raise JobFileError(f"{where} must be one of {', '.join(c for c, _ in self.choices)}, got {value!r}")
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise JobFileError(f"{where} must be true or false")
            return value
        if value is None and self.default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else int | float):
            raise JobFileError(f"{where} must be {'an integer' if self.kind is int else 'a number'}, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            bounds = f"[{self.low}, {self.high}]" if self.high is not None else f"at least {self.low}"
            raise JobFileError(f"{where} must be {bounds}, got {value!r}")
        return self.kind(value)


CAPTURE_OPTIONS = (
    Option("smoothing", 1.0, "Smoothing", "Temporal smoothing of the captured expression (0: raw per-frame codes)",
           low=0.0, high=10.0),
    Option("gaps", "hold", "Face Lost", "What the animation does on frames where no face is found",
           kind=str, choices=(("hold", "Keep the last expression until the face is found again"),
                              ("interpolate", "Blend from the expression before the gap to the one after it"))),
    Option("tolerance_cm", 0.005, "Tolerance", "Largest per-vertex error of the shape-key basis, in the template's cm",
           low=0.0, high=10.0),
    Option("max_keys", None, "Max Keys", "Most shape keys in the basis (default: as many as the tolerance needs)",
           kind=int, low=1),
    Option("follow_landmarks", True, "Follow Landmarks", "Fit each frame's expression to the tracked face points,"
           " with the network's reading as the prior: winks, closed eyes and open mouths at their full strength",
           kind=bool),
    Option("arkit", False, "ARKit", "Also solve the 52 ARKit weights", kind=bool),
    Option("rebake", False, "Re-bake", "Keep in the result what a re-bake without the engine needs (serep_engine/tune):"
           " the target's code basis, 64 x vertices x 3 floats (15 MB on a 20k-vertex mesh)", kind=bool),
)
OPTIONS = {option.name: option for option in CAPTURE_OPTIONS}

JobOptions = make_dataclass("JobOptions", [(o.name, o.kind | None, field(default=o.default)) for o in CAPTURE_OPTIONS])
JobOptions.__doc__ = "The capture options of one job (see CAPTURE_OPTIONS), defaults filled in."


class JobFileError(ValueError):
    """A job file that is missing, not JSON, or not what the schema says. Its message is one line (the CLI and the
    add-on show it as one): a line break inside a path or value it quotes is shown escaped (found by the fuzz test:
    a clip path ending in a newline)."""

    def __init__(self, message: str):
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


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


def _options(data) -> JobOptions:
    if not isinstance(data, dict):
        raise JobFileError("'options' must be an object")
    unknown = sorted(set(data) - set(OPTIONS))
    if unknown:
        raise JobFileError(f"unknown job options: {', '.join(unknown)}")
    return JobOptions(**{name: OPTIONS[name].check(value) for name, value in data.items()})
