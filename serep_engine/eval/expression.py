"""`serep eval expression`: the expression model on held-out identities (MultiREX region protocol).

- reconstruction: encode and decode on the same held-out identity;
- retarget: identity A's expression decoded onto identity B, against B's deformation-transfer truth;
- naive_retarget: A's displacements added to B's neutral (what a linear 3DMM does);
- both on typical identities (N(0,1) per mode) and stylised ones (N(0, 2.5^2)), all from evaluation
  seeds; within each group, A is retargeted onto the next identity in the group;
- neutral_leak: the largest mean displacement (mm) of the neutral code decoded onto any identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from serep_engine.eval.protocol import region_errors_mm, summarise
from serep_engine.expression.model import ExpressionModel
from serep_engine.facemodel.expressions import sample_expressions
from serep_engine.facemodel.ict import EVAL_SEEDS, MM_PER_CM, ICTModel
from serep_engine.facemodel.identities import eval_identity, identity_shapes


@dataclass
class EvalGroup:
    neutrals: np.ndarray  # (I, V, 3)
    shapes: np.ndarray  # (I, 53, V, 3) identity-specific shapes (deformation transfer)
    expressions: np.ndarray  # (I, E, 53): each identity performs its own expressions

    def truth_on(self, target: int, source: int) -> np.ndarray:
        """(E, V, 3) displacements of the source identity's expressions performed by the target identity."""
        return np.einsum("ek,kvi->evi", self.expressions[source], self.shapes[target])


def make_group(face_model: ICTModel, n_identities: int, n_expressions: int, stylised: bool) -> EvalGroup:
    rng = np.random.default_rng(EVAL_SEEDS[-1] - int(stylised))
    weights = [eval_identity(face_model, i, stylised) for i in range(n_identities)]
    shapes = np.stack([identity_shapes(face_model, w) for w in weights])
    expressions = np.stack([sample_expressions(rng, n_expressions) for _ in weights])
    return EvalGroup(np.stack([face_model.identity_neutral(w) for w in weights]), shapes, expressions)


@torch.no_grad()
def evaluate_group(model: ExpressionModel, face_model: ICTModel, group: EvalGroup) -> dict:
    n = len(group.neutrals)
    bases = [model.identity_basis(neutral) for neutral in group.neutrals]  # E_id, then D_mesh per code unit
    rec_err, ret_err, naive_err = [], [], []
    predictions = {}
    for source in range(n):
        target = (source + 1) % n
        own = group.truth_on(source, source)
        codes = model.encode_displacements(torch.from_numpy(own).float(), bases[source])
        reconstruction = model.decode_with_basis(codes, bases[source]).numpy()
        retarget = model.decode_with_basis(codes, bases[target]).numpy()
        truth_target = group.neutrals[target] + group.truth_on(target, source)
        rec_err.append(region_errors_mm(face_model, group.neutrals[source] + reconstruction,
                                        group.neutrals[source] + own))
        ret_err.append(region_errors_mm(face_model, group.neutrals[target] + retarget, truth_target))
        naive_err.append(region_errors_mm(face_model, group.neutrals[target] + own, truth_target))
        predictions[source] = (retarget, truth_target - group.neutrals[target])

    def pool(per_source):
        return summarise({k: np.concatenate([e[k] for e in per_source]) for k in per_source[0]})

    neutral_code = torch.zeros(model.config.code_dim)
    leak = max(model.decode_with_basis(neutral_code, b).norm(dim=-1).mean().item() for b in bases) * MM_PER_CM
    return {
        "reconstruction_mm": pool(rec_err),
        "retarget_mm": pool(ret_err),
        "naive_retarget_mm": pool(naive_err),
        "neutral_leak_mm": leak,
        "predictions": predictions,
    }


def evaluate_expression(model: ExpressionModel, face_model: ICTModel, n_identities=12, n_expressions=24,
                        figure=None) -> dict:
    model = model.cpu().eval()
    typical = make_group(face_model, n_identities, n_expressions, stylised=False)
    stylised = make_group(face_model, n_identities, n_expressions, stylised=True)
    typical_result = evaluate_group(model, face_model, typical)
    stylised_result = evaluate_group(model, face_model, stylised)
    if figure is not None:
        from serep_engine.eval.figures import retarget_figure

        retarget_figure(face_model, typical, typical_result["predictions"], stylised, stylised_result["predictions"],
                        figure)
    return {
        "reconstruction_mm": typical_result["reconstruction_mm"],
        "retarget_mm": typical_result["retarget_mm"],
        "naive_retarget_mm": typical_result["naive_retarget_mm"],
        "stylised": {
            "reconstruction_mm": stylised_result["reconstruction_mm"],
            "retarget_mm": stylised_result["retarget_mm"],
            "naive_retarget_mm": stylised_result["naive_retarget_mm"],
        },
        "neutral_leak_mm": max(typical_result["neutral_leak_mm"], stylised_result["neutral_leak_mm"]),
        "n_identities": 2 * n_identities,
        "n_pairs": 2 * n_identities * n_expressions,
    }
