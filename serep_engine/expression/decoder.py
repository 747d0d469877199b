"""The expression model at run time, without torch: E_id, D_mesh and E_exp of `expression/model.py` in numpy.

What a capture needs of the model is linear algebra on its learned tensors (J, a): an identity's basis is a
deformation-transfer solve (scipy), decoding is a tensordot, encoding a D x D ridge solve. Training keeps the
torch `ExpressionModel`; `ExpressionDecoder.of` takes either. The identity basis is the torch path's to the bit
(both solve in float64 and round to float32); encoding solves in float64 (torch's float32 solve is off by ~1e-4 of
a code's size; against torch in float64 the two agree to 2e-12).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from serep_engine.facemodel.deformation_transfer import DeformationTransfer, outer_boundary

WEIGHTS_NAME = "expression_model"


@dataclass
class ExpressionModelConfig:
    code_dim: int = 64
    ridge: float = 1e-6  # relative to the mean diagonal of the code Gram matrix


class ExpressionDecoder:
    def __init__(self, gradient_basis: np.ndarray, anchor_basis: np.ndarray, template: np.ndarray,
                 triangles: np.ndarray, config: ExpressionModelConfig | None = None):
        self.config = config or ExpressionModelConfig()
        self.gradient_basis = np.asarray(gradient_basis, np.float32)  # J (D, T, 3, 3)
        self.anchor_basis = np.asarray(anchor_basis, np.float32)  # a (D, n_anchors, 3)
        self.template = np.asarray(template, np.float32)
        self.triangles = np.asarray(triangles, np.int64)
        self.anchors = outer_boundary(self.triangles, len(self.template)).astype(np.int64)

    @classmethod
    def of(cls, model) -> ExpressionDecoder:
        """A decoder of a model: itself, or the torch `ExpressionModel`'s tensors (copied, on the CPU)."""
        if isinstance(model, cls):
            return model
        arrays = [getattr(model, name).detach().cpu().numpy() for name in
                  ("gradient_basis", "anchor_basis", "template", "triangles")]
        return cls(*arrays, ExpressionModelConfig(**vars(model.config)))

    @classmethod
    def load(cls, directory: str | Path, name: str = WEIGHTS_NAME, face_model=None) -> ExpressionDecoder:
        """A checkpoint `ExpressionModel.save` wrote; the template geometry comes from the ICT model."""
        from safetensors.numpy import load_file

        from serep_engine.facemodel.ict import ICTModel

        weights = Path(directory) / f"{name}.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"no expression model checkpoint at {weights}")
        config = ExpressionModelConfig(**json.loads((Path(directory) / f"{name}.json").read_text())["config"])
        face_model = face_model or ICTModel.load()
        tensors = load_file(str(weights))
        return cls(tensors["gradient_basis"], tensors["anchor_basis"], face_model.face_neutral,
                   face_model.face_triangles, config)

    @classmethod
    def from_pretrained(cls, face_model=None) -> ExpressionDecoder:
        """The checkpoint shipped in the package (`serep_engine/weights/`)."""
        return cls.load(Path(str(resources.files("serep_engine") / "weights")), face_model=face_model)

    def digest(self) -> str:
        """A hash of the model's tensors (the torch model's state dict, in its order): a cache key."""
        digest = hashlib.sha256()
        for name in ("gradient_basis", "anchor_basis", "template", "triangles", "anchors"):
            digest.update(name.encode() + np.ascontiguousarray(getattr(self, name)).tobytes())
        return digest.hexdigest()

    def identity_system(self, neutral: np.ndarray) -> DeformationTransfer:
        """E_id: a neutral (V, 3) in template topology, centimetres, template orientation."""
        return DeformationTransfer(np.asarray(neutral), self.triangles, self.anchors)

    def identity_basis(self, identity: DeformationTransfer | np.ndarray) -> np.ndarray:
        """(D, V, 3) float32: the displacement of each code unit on this identity."""
        system = identity if isinstance(identity, DeformationTransfer) else self.identity_system(identity)
        basis = system.displacements_from_gradients(self.gradient_basis.astype(np.float64),
                                                    self.anchor_basis.astype(np.float64))
        return basis.astype(np.float32)

    @staticmethod
    def decode_with_basis(codes: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """Displacements (..., V, 3) of codes (..., D) on one identity's basis (D, V, 3)."""
        return np.tensordot(codes, basis, axes=1)

    def encode_displacements(self, displacements: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """Codes (..., D) of displacements (..., V, 3) on one identity's basis (D, V, 3), solved in float64: the
        Gram matrix squares the basis's conditioning, and in float32 the codes are off by ~1e-4 of their size."""
        dtype = np.result_type(displacements, basis)
        flat = np.asarray(basis, np.float64).reshape(len(basis), -1)  # (D, 3V)
        gram = flat @ flat.T
        gram += self.config.ridge * gram.diagonal().mean() * np.eye(len(gram))
        rhs = np.asarray(displacements, np.float64).reshape(*displacements.shape[:-2], -1) @ flat.T  # (..., D)
        return np.linalg.solve(gram, rhs[..., None])[..., 0].astype(dtype)

    def decode(self, codes: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """D_mesh: codes (F, D) on one identity's neutral (V, 3) -> displacements (F, V, 3)."""
        return self.decode_with_basis(codes, self.identity_basis(neutral))

    def encode(self, expressive: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """E_exp: expressive meshes (F, V, 3) of one subject with neutral (V, 3) -> codes (F, D)."""
        neutral = np.asarray(neutral, expressive.dtype)
        return self.encode_displacements(expressive - neutral, self.identity_basis(neutral))
