"""The `serep` command line (also `python -m serep_engine`): thin handlers, one module per kind of command.

Results and summaries are JSON on stdout (the last line is the machine-readable one); logs go to stderr
(none with --json). Bad input exits non-zero with a one-line message on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serep_engine.cli import capture, common, data, evaluate, export_onnx, train
from serep_engine.device import BACKENDS


def bench(args) -> dict:
    from serep_engine.bench import run_bench

    return run_bench(args.device, args.clip_720p, args.clip_1080p, args.repeats, args.frames, args.weights,
                     bake=not args.no_bake, track_workers=args.track_workers, log=common.log, backend=args.backend)


def _register_bench(commands) -> None:
    parser = commands.add_parser("bench", help="speed and memory, stage by stage (serep_engine/bench.py)")
    common.add_json_flag(parser)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="what runs the capture model (default: as the engine picks, serep_engine/device.py)")
    parser.add_argument("--clip-720p", type=Path, default=None, help="default: the shared data's obama.mp4")
    parser.add_argument("--clip-1080p", type=Path, default=None, help="default: the shared data's skarsgard.mp4")
    parser.add_argument("--repeats", type=int, default=3, help="timed end-to-end runs per clip (median)")
    parser.add_argument("--frames", type=int, default=None, help="only the first N frames of each clip")
    parser.add_argument("--weights", type=Path, default=None, help="capture model folder (default: the shipped one)")
    parser.add_argument("--no-bake", action="store_true", help="skip the Blender (bpy) bake benchmark")
    parser.add_argument("--track-workers", type=int, default=None,
                        help="processes decoding and tracking chunks in parallel (default: 1, the threaded "
                             "pipeline, on the CPU; half the cores with CUDA)")
    parser.set_defaults(func=bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serep", description="SEREP engine: semantic facial expression capture")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (train, evaluate, data, capture, export_onnx):
        module.register(commands)
    _register_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "json_only", False):
        common.quiet()
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        common.log("serep: interrupted")
        return 130
    except Exception as error:  # one line for people, the traceback for --debug
        if args.debug:
            raise
        print(f"serep: error: {error}", file=sys.stderr, flush=True)
        return 1
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
