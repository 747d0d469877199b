"""What the command handlers share: logging to stderr (progress text off with --json; JSON lines always), flags
made from the capture options' declarations, and reading a target mesh file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from serep_engine.contract import CAPTURE_OPTIONS, JobFileError

_quiet = False


def log(message: str) -> None:
    """Progress text for people, on stderr (none with --json)."""
    if not _quiet:
        print(message, file=sys.stderr, flush=True)


def report(line: dict) -> None:
    """A machine-readable line on stderr beside the logs (a method's result, a progress message): kept with --json."""
    print(json.dumps(line), file=sys.stderr, flush=True)


def quiet() -> None:
    """--json: output for programs only: the JSON result (stdout), JSON lines and errors (stderr), no progress text."""
    global _quiet
    _quiet = True


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", dest="json_only", action="store_true",
                        help="JSON only: no progress text on stderr (JSON lines and errors stay)")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_capture_options(parser: argparse.ArgumentParser) -> None:
    """One flag per capture option (contract.CAPTURE_OPTIONS), checked by the option's own rule."""
    for option in CAPTURE_OPTIONS:
        flag = "--" + option.name.replace("_", "-")
        if option.kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=option.default, help=option.help)
            continue

        def checked(text: str, option=option):
            try:
                return option.check(option.kind(text))
            except (ValueError, JobFileError) as error:
                raise argparse.ArgumentTypeError(str(error).replace(f"'options.{option.name}'", "the value"))

        default = f" (default {option.default})" if option.default is not None else ""
        parser.add_argument(flag, type=checked, default=option.default, help=option.help + default,
                            choices=[choice for choice, _ in option.choices] or None)


def capture_options(args) -> dict:
    return {option.name: getattr(args, option.name) for option in CAPTURE_OPTIONS}


def load_target(path: Path):
    """A target mesh from an .npz (vertices, faces) or any mesh file trimesh reads (.obj, .ply, .stl, .glb)."""
    from serep_engine.engine import TargetMesh

    if not path.exists():
        raise FileNotFoundError(f"target mesh not found: {path}")
    if path.suffix.lower() == ".npz":
        return TargetMesh.load(path)
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    if len(mesh.faces) == 0:
        raise ValueError(f"the target {path} has no faces")
    return TargetMesh(np.asarray(mesh.vertices), np.asarray(mesh.faces))
