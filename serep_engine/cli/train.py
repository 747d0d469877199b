"""`serep train expression|capture`: flags made from each training config's dataclass fields."""

from __future__ import annotations

import argparse
from pathlib import Path

from serep_engine.cli.common import add_json_flag, boolean, log


def train_expression(args) -> dict:
    from serep_engine.expression.train import config_from_args, train_expression

    return train_expression(config_from_args(args), out_dir=args.out, log=log)["summary"]


def train_capture(args) -> dict:
    from serep_engine.capture.train import config_from_args, train_capture

    return train_capture(config_from_args(args), args.out or Path("capture_model"), log=log)


def train_landmark_map(args) -> dict:
    from serep_engine.capture.landmarks68 import MAP_NAME, fit_landmark_map, photo_points
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.paths import data_dir

    photos = args.photos or data_dir() / "real" / "faces68" / "helen_train"
    landmark_map, summary = fit_landmark_map(ICTModel.load(), *photo_points(photos), log=log)
    args.out.mkdir(parents=True, exist_ok=True)
    summary["fitted_on"] = Path(photos).name
    landmark_map.save(args.out / MAP_NAME, summary)
    return summary


def _needs_torch(reason: str):
    raise RuntimeError(f"training needs torch, which this install cannot import ({reason})")


def _config_flags(parser, config) -> None:
    for name, default in config.__dataclass_fields__.items():
        kind = type(default.default)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=boolean if kind is bool else kind,
                            default=None, help=f"(default {default.default!r})")


def register(commands) -> None:
    from serep_engine.paths import weights_dir

    try:
        from serep_engine.capture.train import TrainCaptureConfig
        from serep_engine.expression.train import TrainConfig
    except ImportError as error:  # an install without torch (the Blender extension's) runs inference only
        parser = commands.add_parser("train", help="train a model (needs torch)")
        parser.add_argument("arguments", nargs=argparse.REMAINDER)
        parser.set_defaults(func=lambda args, reason=str(error): _needs_torch(reason))
        return

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    expression = train.add_parser("expression", help="train the semantic expression model (E_id, E_exp, D_mesh)")
    _config_flags(expression, TrainConfig)
    expression.add_argument("--out", type=Path, default=None, help="folder to write the checkpoint to")
    expression.set_defaults(func=train_expression)

    capture = train.add_parser("capture", help="train the capture model (E_img, H_exp, H_lmks, C_d)")
    _config_flags(capture, TrainCaptureConfig)
    capture.add_argument("--out", type=Path, default=None, help="folder for checkpoints and weights")
    capture.set_defaults(func=train_capture)

    landmark_map = train.add_parser("landmark-map", help="fit the 68-landmark map on mediapipe's points "
                                    "(capture/landmarks68.py) to annotated photos")
    landmark_map.add_argument("--photos", type=Path, default=None,
                              help="folder of photos + landmarks68.json "
                                   "(default: ../shared/data/real/faces68/helen_train)")
    landmark_map.add_argument("--out", type=Path, default=weights_dir(), help="folder to write the map to")
    add_json_flag(landmark_map)
    landmark_map.set_defaults(func=train_landmark_map)
