"""SynthREX's floor for SEREP: the score of perfect codes, so the capture model's error can be read as its own.

Per subject, the codes a perfect capture model would output (the training targets: each ARKit weight's code on
the template, as `serep synth` makes them) and the best codes of the true meshes (E_exp on the subject's neutral)
are decoded by D_mesh onto the subject's neutral and scored with the MultiREX region protocol, next to
predicting the neutral. No video is read.

    python benchmarks/synthrex_floor.py
"""

from __future__ import annotations

import json

import numpy as np
import torch


def main() -> int:
    from serep_engine.eval import synthrex
    from serep_engine.eval.protocol import region_errors_mm, summarise
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.facemodel.regions import REGION_NAMES
    from serep_engine.synth.dataset import SynthGenerator

    face_model = ICTModel.load()
    synthrex.generate(face_model, log=lambda _: None)
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    generator = SynthGenerator(face_model, expression_model)
    errors = {kind: {region: [] for region in REGION_NAMES} for kind in ("target_codes", "encoded_truth", "neutral")}
    for index in range(synthrex.N_SUBJECTS):
        truth = synthrex.subject_truth(face_model, index)
        with torch.no_grad():
            basis = expression_model.identity_basis(truth["neutral"]).numpy()
            encoded = expression_model.encode(torch.from_numpy(truth["meshes"]).float(), truth["neutral"]).numpy()
        target = generator.code_of_weights(truth["weights"])
        for kind, codes in (("target_codes", target), ("encoded_truth", encoded), ("neutral", np.zeros_like(target))):
            predicted = truth["neutral"][None] + np.tensordot(codes, basis, axes=1)
            for region, values in region_errors_mm(face_model, predicted, truth["meshes"]).items():
                errors[kind][region].append(values)
    print(json.dumps({kind: summarise({r: np.concatenate(v) for r, v in by_region.items()})
                      for kind, by_region in errors.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
