"""Training the expression model on unpaired identity-specific expressions.

Every training sample is a fresh random expression on one training identity: no expression is ever
shown on two identities (that pairing is the evaluation's ground truth), and the expression weights are
never shown at all. Two stages:

1. Initialise: J and a are the principal directions of the deformation gradients (and outer-boundary
   displacements) that the sampled expressive meshes show relative to their own neutrals, pooled over
   identities. Cheap and already close, but biased: an identity's expressions do not follow one
   gradient field exactly (gradients are not integrable on every shape).
2. Refine by reconstruction through the decoder: encode each sample on its own identity, decode on the
   same identity, and descend on the squared vertex error (the solve is differentiated by its adjoint).

The paper's cycle loss (A's code decoded on B, re-encoded on B, decoded back on A) is logged, not
optimised: E_exp is the exact least-squares inverse of D_mesh on every identity, so re-encoding on B
returns A's code unchanged and the cycle error equals the reconstruction error identically.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from serep_engine.expression.model import ExpressionModel, ExpressionModelConfig
from serep_engine.facemodel.deformation_transfer import edge_matrices
from serep_engine.facemodel.expressions import sample_expressions
from serep_engine.facemodel.ict import ICTModel
from serep_engine.facemodel.identities import TRANSFER_VERSION, identity_shapes, training_identity


@dataclass
class TrainConfig:
    identities: int = 320  # training identities (their shapes are cached deformation transfers)
    init_identities: int = 128
    init_expressions: int = 24  # per identity, for the initial principal directions
    steps: int = 240
    refine_identities: int = 96  # identities the refinement draws from (each keeps a factorised system)
    identities_per_step: int = 4
    expressions_per_identity: int = 32
    lr: float = 3e-4
    seed: int = 0
    code_dim: int = 64
    log_every: int = 25


class TrainingData:
    """Training identities: neutrals and shapes in memory; samples unpaired expressive meshes."""

    def __init__(self, face_model: ICTModel, n_identities: int):
        weights = [training_identity(face_model, i) for i in range(n_identities)]
        self.neutrals = np.stack([face_model.identity_neutral(w) for w in weights])
        self.shapes = np.stack([identity_shapes(face_model, w) for w in weights])  # (N, 53, V, 3)

    def sample(self, rng: np.random.Generator, identity: int, count: int) -> np.ndarray:
        """(count, V, 3) displacements of fresh random expressions on one identity."""
        return np.einsum("ek,kvi->evi", sample_expressions(rng, count), self.shapes[identity])


def initialise(model: ExpressionModel, data: TrainingData, config: TrainConfig, rng: np.random.Generator) -> None:
    """J and a from the principal directions of observed gradient offsets and boundary displacements."""
    triangles = model.triangles.numpy()
    anchors = model.anchors.numpy()
    rows = []
    for identity in rng.choice(len(data.neutrals), min(config.init_identities, len(data.neutrals)), replace=False):
        neutral = data.neutrals[identity]
        rest_inverse = np.linalg.inv(edge_matrices(neutral, triangles))
        for displacement in data.sample(rng, identity, config.init_expressions):
            offsets = edge_matrices(neutral + displacement, triangles) @ rest_inverse - np.eye(3)
            rows.append(np.concatenate([offsets.ravel(), displacement[anchors].ravel()]).astype(np.float32))
    samples = torch.from_numpy(np.stack(rows))
    _, s, vt = torch.linalg.svd(samples, full_matrices=False)  # no centring: the neutral code is zero
    d = model.config.code_dim
    directions = vt[:d] * (s[:d, None] / np.sqrt(len(samples)))  # unit-variance codes
    n_gradient = model.gradient_basis[0].numel()
    model.gradient_basis.data = directions[:, :n_gradient].reshape(model.gradient_basis.shape).clone()
    model.anchor_basis.data = directions[:, n_gradient:].reshape(model.anchor_basis.shape).clone()


def reconstruction_and_cycle(model: ExpressionModel, bases: list[torch.Tensor], displacements: list[torch.Tensor]):
    """Mean squared vertex error (cm^2) of reconstruction (differentiable) and of the cycle A -> B -> A
    (logged only)."""
    reconstruction, cycle = [], []
    for i, (basis, target) in enumerate(zip(bases, displacements, strict=True)):
        codes = model.encode_displacements(target, basis)
        reconstruction.append((model.decode_with_basis(codes, basis) - target).square().sum(-1).mean())
        with torch.no_grad():
            other = bases[(i + 1) % len(bases)]
            back = model.encode_displacements(model.decode_with_basis(codes, other), other)
            cycle.append((model.decode_with_basis(back, basis) - target).square().sum(-1).mean())
    return torch.stack(reconstruction).mean(), torch.stack(cycle).mean()


def train_expression(config: TrainConfig, face_model: ICTModel | None = None, out_dir=None, log=print) -> dict:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    face_model = face_model or ICTModel.load()
    started = time.perf_counter()
    data = TrainingData(face_model, config.identities)
    model = ExpressionModel(face_model.face_neutral, face_model.face_triangles, ExpressionModelConfig(config.code_dim))
    initialise(model, data, config, rng)
    init_seconds = time.perf_counter() - started
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    warmup = max(1, config.steps // 10)  # Adam's first steps are full-size: ease in from the initialisation
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min((step + 1) / warmup, 0.5 * (1 + np.cos(np.pi * step / max(config.steps, 1)))))
    pool = rng.choice(len(data.neutrals), min(config.refine_identities, len(data.neutrals)), replace=False)
    systems: dict[int, object] = {}
    history = []
    for step in range(config.steps + 1):
        identities = rng.choice(pool, config.identities_per_step, replace=False)
        for identity in identities:
            if identity not in systems:
                systems[identity] = model.identity_system(data.neutrals[identity])
        bases = [model.identity_basis(systems[i]) for i in identities]
        targets = [torch.from_numpy(data.sample(rng, i, config.expressions_per_identity)) for i in identities]
        loss, cycle = reconstruction_and_cycle(model, bases, targets)
        if step % config.log_every == 0 or step == config.steps:
            record = {"step": step, "rec_rms_mm": round(loss.item() ** 0.5 * 10, 4),
                      "cycle_rms_mm": round(cycle.item() ** 0.5 * 10, 4)}
            history.append(record)
            log(json.dumps(record))
        if step == config.steps:
            break
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    summary = {
        "config": asdict(config),
        "data_version": f"ict_facekit+{TRANSFER_VERSION}",
        "train_seconds": round(time.perf_counter() - started, 1),
        "init_seconds": round(init_seconds, 1),
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
