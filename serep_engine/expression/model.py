"""The semantic expression model: E_id, E_exp and D_mesh over the face template.

The code z means a deformation, not a displacement. D_mesh decodes it in the gradient domain:

    G(z) = sum_d z_d J_d  (per-triangle 3x3 deformation-gradient offsets)   a(z) = sum_d z_d a_d

and the identity's own mesh is the one whose triangles best follow I + G(z) from its own neutral (the
least-squares problem of deformation transfer), with the template's outer boundary moved by a(z).
So a code moves a long nose and a short nose the way each of them moves, not by the same vectors.

- E_id(neutral): the identity's geometry that decoding needs: its per-triangle rest frames and the
  factorised normal matrix (`IdentitySystem`); no learned weights.
- D_mesh(z, neutral): linear in z, so decoding onto one identity is `identity_basis(identity)` (D, V, 3)
  once, then a matrix product per frame; z = 0 decodes to exactly zero.
- E_exp(expressive, neutral): analysis by synthesis, the code whose decoding on this identity best
  explains the expressive mesh (ridge least squares against the identity's basis, a D x D system).

The learned parameters are J (D, T, 3, 3) and a (D, n_anchors, 3), shared by every identity.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serep_engine.expression.decoder import WEIGHTS_NAME, ExpressionModelConfig
from serep_engine.facemodel.deformation_transfer import DeformationTransfer, outer_boundary


IdentitySystem = DeformationTransfer  # E_id's output: one identity's transfer system on the template topology


class _DecodeBasis(torch.autograd.Function):
    """(J, a) -> the identity's basis (D, V, 3), differentiable through the sparse solve."""

    @staticmethod
    def forward(ctx, gradient_basis, anchor_basis, system: IdentitySystem):
        ctx.system = system
        basis = system.displacements_from_gradients(
            gradient_basis.detach().cpu().double().numpy(), anchor_basis.detach().cpu().double().numpy()
        )
        return torch.from_numpy(basis).to(gradient_basis)

    @staticmethod
    def backward(ctx, grad_basis):
        grad_j, grad_a = ctx.system.adjoint(grad_basis.detach().cpu().double().numpy())
        return torch.from_numpy(grad_j).to(grad_basis), torch.from_numpy(grad_a).to(grad_basis), None


class ExpressionModel(nn.Module):
    def __init__(self, template: np.ndarray, triangles: np.ndarray, config: ExpressionModelConfig | None = None):
        super().__init__()
        self.config = config or ExpressionModelConfig()
        self.register_buffer("template", torch.as_tensor(np.asarray(template), dtype=torch.float32))
        self.register_buffer("triangles", torch.as_tensor(np.asarray(triangles), dtype=torch.int64))
        anchors = outer_boundary(np.asarray(triangles), len(template))
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.int64))
        d = self.config.code_dim
        self.gradient_basis = nn.Parameter(torch.zeros(d, len(triangles), 3, 3))
        self.anchor_basis = nn.Parameter(torch.zeros(d, len(anchors), 3))

    @property
    def n_vertices(self) -> int:
        return self.template.shape[0]

    def identity_system(self, neutral: np.ndarray | torch.Tensor) -> IdentitySystem:
        """E_id: a neutral (V, 3) in template topology, centimetres, template orientation."""
        neutral = neutral.detach().cpu().numpy() if torch.is_tensor(neutral) else np.asarray(neutral)
        return IdentitySystem(neutral, self.triangles.cpu().numpy(), self.anchors.cpu().numpy())

    def identity_basis(self, identity: IdentitySystem | np.ndarray | torch.Tensor) -> torch.Tensor:
        """(D, V, 3): the displacement of each code unit on this identity."""
        system = identity if isinstance(identity, IdentitySystem) else self.identity_system(identity)
        return _DecodeBasis.apply(self.gradient_basis, self.anchor_basis, system)

    @staticmethod
    def decode_with_basis(codes: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Displacements (..., V, 3) of codes (..., D) on one identity's basis (D, V, 3)."""
        return torch.einsum("...d,dvi->...vi", codes, basis)

    def encode_displacements(self, displacements: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Codes (..., D) of displacements (..., V, 3) on one identity's basis (D, V, 3)."""
        flat = basis.flatten(1)  # (D, 3V)
        gram = flat @ flat.T
        gram = gram + self.config.ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype,
                                                                              device=gram.device)
        rhs = displacements.flatten(-2) @ flat.T  # (..., D)
        return torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)

    def decode(self, codes: torch.Tensor, neutral) -> torch.Tensor:
        """D_mesh. Codes (F, D) on one identity's neutral (V, 3) -> displacements (F, V, 3); or codes (B, D)
        on one neutral each (B, V, 3) -> (B, V, 3)."""
        if np.ndim(neutral) == 3:
            return torch.stack([self.decode(c[None], n)[0] for c, n in zip(codes, neutral, strict=True)])
        return self.decode_with_basis(codes, self.identity_basis(neutral))

    def encode(self, expressive: torch.Tensor, neutral) -> torch.Tensor:
        """E_exp. Expressive meshes (F, V, 3) of one subject with neutral (V, 3) -> codes (F, D); or one
        neutral per mesh (B, V, 3) -> (B, D)."""
        if np.ndim(neutral) == 3:
            return torch.stack([self.encode(e[None], n)[0] for e, n in zip(expressive, neutral, strict=True)])
        neutral = torch.as_tensor(neutral, dtype=expressive.dtype, device=expressive.device)
        return self.encode_displacements(expressive - neutral, self.identity_basis(neutral))

    # -- persistence: tensors only (safetensors) plus a JSON of the config and provenance --

    def save(self, directory: str | Path, name: str = WEIGHTS_NAME, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "gradient_basis": self.gradient_basis.detach().half().contiguous(),
            "anchor_basis": self.anchor_basis.detach().float().contiguous(),
        }
        save_file(tensors, directory / f"{name}.safetensors")
        info = {"config": asdict(self.config), **(metadata or {})}
        (directory / f"{name}.json").write_text(json.dumps(info, indent=2))
        return directory / f"{name}.safetensors"

    @classmethod
    def load(cls, directory: str | Path, name: str = WEIGHTS_NAME, device: str | torch.device = "cpu",
             face_model=None) -> ExpressionModel:
        """Load a checkpoint; the template geometry comes from the ICT model (not stored twice)."""
        from safetensors.torch import load_file

        from serep_engine.facemodel.ict import ICTModel

        directory = Path(directory)
        weights = directory / f"{name}.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"no expression model checkpoint at {weights}")
        info = json.loads((directory / f"{name}.json").read_text())
        face_model = face_model or ICTModel.load()
        model = cls(face_model.face_neutral, face_model.face_triangles, ExpressionModelConfig(**info["config"]))
        tensors = load_file(weights)
        model.gradient_basis.data = tensors["gradient_basis"].float()
        model.anchor_basis.data = tensors["anchor_basis"].float()
        return model.to(device).eval()

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = None, face_model=None) -> ExpressionModel:
        """The checkpoint shipped in the package (`serep_engine/weights/`)."""
        from serep_engine.device import pick_device

        with resources.as_file(resources.files("serep_engine") / "weights") as weights_dir:
            return cls.load(weights_dir, device=pick_device(device), face_model=face_model)
