"""`serep export-onnx`: the capture model as the ONNX graph the torch-free backend runs (capture/export.py)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from serep_engine.cli.common import log


def export_onnx(args) -> dict:
    from serep_engine.capture.export import export_onnx
    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.runtime import ONNX_NAME

    shipped = Path(str(resources.files("serep_engine") / "weights"))
    weights = args.weights or shipped
    out = args.out or weights / ONNX_NAME
    path = export_onnx(CaptureModel.load(weights), out)
    log(f"export-onnx: {path}")
    return {"onnx": str(path), "weights": str(weights), "bytes": path.stat().st_size}


def register(commands) -> None:
    parser = commands.add_parser("export-onnx", help="export the capture model to ONNX (the torch-free backend)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="capture model folder (default: the shipped serep_engine/weights)")
    parser.add_argument("--out", type=Path, default=None, help="default: capture_model.onnx in the weights folder")
    parser.set_defaults(func=export_onnx)
