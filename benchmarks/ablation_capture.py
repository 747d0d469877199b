"""Capture-model ablation, each variant trained with the same short schedule and seed:
- inputs and domain adaptation (on the first architecture: whole 96 px crop, averaged CNN features, plain
  code loss): with vs without domain adaptation, image-only vs image + landmark inputs, landmarks only;
- the architecture, step by step: flattened (spatial) CNN features, mouth and eyes patches at twice the
  resolution, the region-balanced code loss (all three = the shipped design);
then measured on
- held-out synthetic shards (decoded-mesh RMS error, mm),
- real photos: AFW landmark NME (never trained on),
- SynthREX (MultiREX protocol on held-out synthetic subjects; a subset of subjects/frames for speed).

    python benchmarks/ablation_capture.py --steps 2500 --out runs/ablation [--subjects 4 --frames 75]

Runs already in `--out` are reused (training resumes from its checkpoint). Prints one JSON line per
variant and a final JSON table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FIRST = {"spatial_features": False, "region_patches": False, "balanced_code_loss": False}
VARIANTS = {
    "image+landmarks, DA": {**FIRST, "use_image": True, "use_landmarks": True, "domain_weight": 0.1},
    "image+landmarks, no DA": {**FIRST, "use_image": True, "use_landmarks": True, "domain_weight": 0.0},
    "image only, DA": {**FIRST, "use_image": True, "use_landmarks": False, "domain_weight": 0.1},
    "landmarks only, DA": {**FIRST, "use_image": False, "use_landmarks": True, "domain_weight": 0.1},
    "+ spatial features": {**FIRST, "spatial_features": True},
    "+ region patches": {**FIRST, "spatial_features": True, "region_patches": True},
    "+ balanced code loss": {},  # the defaults: the shipped design
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--frames", type=int, default=75)
    parser.add_argument("--only", action="append", help="run only these variants (by name)")
    parser.add_argument("--max-shards", type=int, default=96,
                        help="synthetic shards used (96 = the 24,576-sample set the published table was made on)")
    args = parser.parse_args()

    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.train import TrainCaptureConfig, train_capture
    from serep_engine.eval.baselines import SerepMethod
    from serep_engine.eval.landmarks import evaluate_landmarks
    from serep_engine.eval.synthrex import evaluate_method
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.paths import data_dir

    def log(message):
        print(message, file=sys.stderr, flush=True)

    face_model = ICTModel.load()
    table = {}
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        folder = args.out / name.replace(" ", "").replace(",", "_").replace("+", "_")
        config = TrainCaptureConfig(steps=args.steps, max_shards=args.max_shards, **overrides)
        summary = train_capture(config, folder, log=lambda _: None)
        model = CaptureModel.load(folder)
        afw = evaluate_landmarks(model, data_dir() / "real" / "faces68" / "afw")
        synthrex = evaluate_method(face_model, "serep", SerepMethod(face_model, model), args.subjects, args.frames,
                                   log=lambda _: None)
        row = {"synth_val_code_rms_mm": summary["validation"]["code_rms_mm"],
               "afw_nme_inner51": afw["nme_inner51"], "synthrex_mean_mm": synthrex["regions_mm"]["mean"],
               "synthrex_views_mm": synthrex["views_mm"], "train_seconds": summary["seconds"]}
        table[name] = row
        log(json.dumps({"variant": name, **row}))
    print(json.dumps({"steps": args.steps, "subjects": args.subjects, "frames": args.frames, "variants": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
