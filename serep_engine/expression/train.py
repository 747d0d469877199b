"""Training the expression model on unpaired identity-specific expressions.

Every training sample is a fresh random expression on one training identity: no expression is ever
shown on two identities (that pairing is the evaluation's ground truth). Losses:
- reconstruction: encode on the subject, decode on the same subject;
- cycle consistency (the paper's): A's code decoded onto another identity B, re-encoded on B and
  decoded back onto A must give A's expression.
The neutral code decodes to zero by construction (D_mesh is linear in the code).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from serep_engine.expression.model import ExpressionModel, ExpressionModelConfig
from serep_engine.facemodel.expressions import sample_expressions
from serep_engine.facemodel.ict import ICTModel
from serep_engine.facemodel.identities import TRANSFER_VERSION, identity_shapes, training_identity


@dataclass
class TrainConfig:
    identities: int = 320
    steps: int = 1500
    identities_per_step: int = 4
    expressions_per_identity: int = 32
    lr: float = 3e-4  # for the local (dimensionless) terms; the basis and global terms are in cm
    basis_lr: float = 3e-5
    cycle_weight: float = 0.5
    seed: int = 0
    code_dim: int = 64
    identity_dim: int = 8
    log_every: int = 100


class TrainingData:
    """Training identities' neutrals and shapes in memory; samples unpaired expressive meshes."""

    def __init__(self, face_model: ICTModel, n_identities: int):
        weights = [training_identity(face_model, i) for i in range(n_identities)]
        self.neutrals = torch.from_numpy(np.stack([face_model.identity_neutral(w) for w in weights]))
        self.shapes = torch.from_numpy(np.stack([identity_shapes(face_model, w) for w in weights]))  # (N,53,V,3)

    def sample(self, rng: np.random.Generator, n_identities: int, per_identity: int):
        """Neutrals (I, V, 3) and displacements (I, E, V, 3) of fresh expressions on I distinct identities."""
        ids = rng.choice(len(self.neutrals), n_identities, replace=False)
        expressions = torch.from_numpy(sample_expressions(rng, n_identities * per_identity))
        expressions = expressions.reshape(n_identities, per_identity, -1)
        return self.neutrals[ids], torch.einsum("iek,ikvj->ievj", expressions, self.shapes[ids])


def initialise(model: ExpressionModel, data: TrainingData, face_model: ICTModel, rng: np.random.Generator):
    """Basis from the principal directions of unlabelled sampled displacements; identity directions from
    the principal directions of the training neutrals."""
    _, displacements = data.sample(rng, min(len(data.neutrals), 64), 32)
    _, s, vt = torch.linalg.svd(displacements.flatten(2).flatten(0, 1), full_matrices=False)
    d = model.config.code_dim
    model.basis.data = (vt[:d] * (s[:d, None] / np.sqrt(s.shape[0]))).reshape(model.basis.shape)
    offsets = (data.neutrals - model.template).flatten(1)
    _, s, vt = torch.linalg.svd(offsets - offsets.mean(0), full_matrices=False)
    k = model.config.identity_dim
    model.identity_directions.data = vt[:k].clone()
    model.identity_scale.data = s[:k] / np.sqrt(len(offsets))


def losses(model: ExpressionModel, neutrals: torch.Tensor, displacements: torch.Tensor):
    """Mean squared per-vertex error (cm^2) of reconstruction and of the cycle through another identity."""
    basis = model.identity_basis(neutrals)
    codes = model.encode_displacements(displacements, basis)
    loss_rec = (model.decode_with_basis(codes, basis) - displacements).square().sum(-1).mean()
    other = basis.roll(1, dims=0)  # each identity's codes visit the next identity of the batch
    retargeted = model.decode_with_basis(codes, other)
    cycled = model.decode_with_basis(model.encode_displacements(retargeted, other), basis)
    loss_cycle = (cycled - displacements).square().sum(-1).mean()
    return loss_rec, loss_cycle


def train_expression(config: TrainConfig, face_model: ICTModel | None = None, out_dir=None, log=print) -> dict:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    face_model = face_model or ICTModel.load()
    started = time.perf_counter()
    data = TrainingData(face_model, config.identities)
    data_seconds = time.perf_counter() - started
    model = ExpressionModel(face_model.face_neutral, ExpressionModelConfig(config.code_dim, config.identity_dim))
    initialise(model, data, face_model, rng)
    groups = [{"params": [model.local], "lr": config.lr},
              {"params": [model.basis, model.global_, model.identity_directions], "lr": config.basis_lr}]
    optimiser = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, [config.lr, config.basis_lr], total_steps=config.steps, pct_start=0.05
    )
    history = []
    for step in range(config.steps):
        neutrals, displacements = data.sample(rng, config.identities_per_step, config.expressions_per_identity)
        loss_rec, loss_cycle = losses(model, neutrals, displacements)
        loss = loss_rec + config.cycle_weight * loss_cycle
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % config.log_every == 0 or step == config.steps - 1:
            record = {"step": step, "rec_rms_mm": round(loss_rec.item() ** 0.5 * 10, 4), "cycle_rms_mm": round(loss_cycle.item() ** 0.5 * 10, 4)}
            history.append(record)
            log(json.dumps(record))
    summary = {
        "config": asdict(config),
        "data_version": f"ict_facekit+{TRANSFER_VERSION}",
        "train_seconds": time.perf_counter() - started,
        "data_seconds": data_seconds,
        "first": history[0],
        "last": history[-1],
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }
    if out_dir is not None:
        model.save(out_dir, metadata={"training": summary})
    return {"model": model, "summary": summary, "history": history}


def config_from_args(args) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig(**overrides)
