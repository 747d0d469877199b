"""`serep synth`, `serep synthrex`, `serep regions`: the training and benchmark data and the regions figure."""

from __future__ import annotations

import time
from pathlib import Path

from serep_engine.cli.common import log


def synth(args) -> dict:
    from serep_engine.paths import data_dir
    from serep_engine.synth.dataset import SynthConfig
    from serep_engine.synth.shards import write_synthetic_set

    videos = [] if args.no_video_backgrounds else sorted((data_dir() / "real" / "videos").glob("*.mp4"))
    return write_synthetic_set(args.n, args.out, seed=args.seed, shard_size=args.shard_size, workers=args.workers,
                               config=SynthConfig(crop_size=args.size, takes=tuple(str(t) for t in args.takes),
                                                  take_share=args.take_share if args.takes else 0.0),
                               videos=videos, log=log)


def synthrex(args) -> dict:
    from serep_engine.eval.synthrex import N_SUBJECTS, generate
    from serep_engine.facemodel.ict import ICTModel

    started = time.perf_counter()
    out = generate(ICTModel.load(args.ict), N_SUBJECTS, log=log)
    return {"synthrex": str(out), "seconds": round(time.perf_counter() - started, 1)}


def regions(args) -> dict:
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.facemodel.regions import draw_regions, region_masks

    model = ICTModel.load(args.ict)
    draw_regions(model, args.figure)
    return {"figure": str(args.figure), "vertices": {k: int(v.sum()) for k, v in region_masks(model).items()}}


def register(commands) -> None:
    parser = commands.add_parser("synth", help="render a sharded synthetic training set")
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output folder (shard_*.npz, manifest.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--no-video-backgrounds", action="store_true", help="procedural backgrounds only")
    parser.add_argument("--takes", type=Path, nargs="*", default=[],
                        help="ARKit takes (Live Link Face CSVs) whose frames give some samples' expressions")
    parser.add_argument("--take-share", type=float, default=0.3, help="the share of samples drawn from --takes")
    parser.set_defaults(func=synth)

    parser = commands.add_parser("synthrex", help="generate (or find) the cached SynthREX benchmark set")
    parser.add_argument("--ict", type=Path, default=None)
    parser.set_defaults(func=synthrex)

    parser = commands.add_parser("regions", help="draw the evaluation regions on the template")
    parser.add_argument("--figure", type=Path, required=True)
    parser.add_argument("--ict", type=Path, default=None)
    parser.set_defaults(func=regions)
