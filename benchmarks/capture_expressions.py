"""Which expressions the capture model reads, on the held-out synthetic shards (never trained on).

For each ARKit expression k, its code c_k (the code of ICT's shape k on the template) gives a direction in
code space; projecting true and predicted codes onto it (in the decoded-mesh metric of training) says how
much of expression k a sample shows and how much the model saw. Reported per expression: the correlation of
the two projections and the slope of predicted on true (1 = full strength, 0 = not seen, < 1 = muted), plus
the overall region-weighted RMS error by head yaw.

    python benchmarks/capture_expressions.py [--weights DIR] [--shards 2] [--no-mirror]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

EXPRESSIONS = ("jawOpen", "eyeBlink_L", "eyeBlink_R", "mouthSmile_L", "mouthSmile_R", "mouthFunnel", "mouthPucker",
               "browInnerUp_L", "browDown_L", "cheekPuff_L")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="capture model folder (default: shipped)")
    parser.add_argument("--shards", type=int, default=2, help="the set's last shards (training's validation)")
    parser.add_argument("--no-mirror", action="store_true", help="without averaging each crop with its mirror image")
    args = parser.parse_args()

    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.train import region_gram
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.expressions import INDEX
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.paths import cache_dir
    from serep_engine.synth.dataset import SynthGenerator
    from serep_engine.synth.shards import read_shard

    face_model = ICTModel.load()
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    gram = region_gram(expression_model, face_model).numpy().astype(np.float64)
    shape_codes = SynthGenerator(face_model, expression_model).code_of_weights(np.eye(53, dtype=np.float32))
    model = CaptureModel.load(args.weights) if args.weights else CaptureModel.from_pretrained("cpu")
    true, predicted, yaw = [], [], []
    for path in sorted((cache_dir() / "capture-synth-v2").glob("shard_*.npz"))[-args.shards:]:
        shard = read_shard(path)
        for start in range(0, len(shard["code"]), 64):
            codes, _ = model.predict(list(shard["crops"][start:start + 64]),
                                     list(shard["mp_landmarks"][start:start + 64]), mirror_average=not args.no_mirror)
            predicted.append(codes)
        true.append(shard["code"])
        yaw.append(np.abs(shard["pose"][:, 0]))
    true, predicted, yaw = (np.concatenate(x).astype(np.float64) for x in (true, predicted, yaw))

    def rms_mm(error):
        return round(float(np.sqrt(np.einsum("bi,ij,bj->b", error, gram, error).mean()) * 10), 3)

    by_yaw = {f"{low}-{high}": rms_mm(predicted[m] - true[m])
              for low, high in ((0, 20), (20, 45), (45, 90)) if (m := (yaw >= low) & (yaw < high)).any()}
    expressions = {}
    for name in EXPRESSIONS:
        direction = shape_codes[INDEX[name]].astype(np.float64)
        scale = direction @ gram @ direction
        shown, seen = true @ gram @ direction / scale, predicted @ gram @ direction / scale
        expressions[name] = {"correlation": round(float(np.corrcoef(shown, seen)[0, 1]), 3),
                                 "slope": round(float(np.polyfit(shown, seen, 1)[0]), 3)}
    print(json.dumps({"samples": len(true), "code_rms_mm": rms_mm(predicted - true), "zero_rms_mm": rms_mm(-true),
                      "code_rms_mm_by_yaw": by_yaw, "expressions": expressions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
