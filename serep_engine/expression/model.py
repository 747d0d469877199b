"""The semantic expression model: E_id, E_exp and D_mesh over the face template.

D_mesh is an identity-conditioned linear basis. For a neutral n with offset o = n - n_template from the
template and identity code h = E_id(n), the displacement of code z is

    D_mesh(z, n)[v] = sum_d z_d * ( B_d[v] + L_d[v] o[v] + G_d[v] h )

B_d is the expression basis on the template; L_d[v] (3x3 per vertex) bends it with the identity's local
geometry (a longer nose swings further when it wrinkles); G_d (3xK per vertex) carries what depends on
the whole face (where the jaw hinge sits). z = 0 decodes to exactly zero on every identity, and decoding
many frames onto one fixed identity is a single matrix product with `identity_basis(n)`.

E_exp is analysis by synthesis: the code whose decoding on this identity best explains the expressive
mesh, a ridge-regularised least-squares solve against the identity's basis (a D x D system).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS_NAME = "expression_model"


@dataclass
class ExpressionModelConfig:
    code_dim: int = 64
    identity_dim: int = 8
    ridge: float = 1e-5  # relative to the mean diagonal of the code Gram matrix


class ExpressionModel(nn.Module):
    def __init__(self, template: np.ndarray | torch.Tensor, config: ExpressionModelConfig | None = None):
        super().__init__()
        self.config = config or ExpressionModelConfig()
        template = torch.as_tensor(np.asarray(template), dtype=torch.float32)
        n_vertices, d, k = len(template), self.config.code_dim, self.config.identity_dim
        self.register_buffer("template", template)
        # E_id: a linear projection of the neutral's offset from the template to K identity features.
        self.identity_directions = nn.Parameter(torch.zeros(k, n_vertices * 3))
        self.identity_scale = nn.Parameter(torch.ones(k), requires_grad=False)
        # D_mesh.
        self.basis = nn.Parameter(torch.zeros(d, n_vertices, 3))
        self.local = nn.Parameter(torch.zeros(d, n_vertices, 3, 3))
        self.global_ = nn.Parameter(torch.zeros(d, n_vertices, 3, k))

    @property
    def n_vertices(self) -> int:
        return self.template.shape[0]

    def identity_features(self, neutral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E_id: (B, V, 3) neutrals -> (offsets (B, V, 3), identity codes (B, K))."""
        offset = neutral - self.template
        code = offset.reshape(len(offset), -1) @ self.identity_directions.T / self.identity_scale
        return offset, code

    def identity_basis(self, neutral: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) neutrals -> (B, D, V, 3): each identity's own expression basis."""
        offset, code = self.identity_features(neutral)
        return (
            self.basis
            + torch.einsum("dvij,bvj->bdvi", self.local, offset)
            + torch.einsum("dvik,bk->bdvi", self.global_, code)
        )

    def decode(self, code: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """D_mesh: codes (B, D) on neutrals (B, V, 3) -> displacements (B, V, 3)."""
        return torch.einsum("bd,bdvi->bvi", code, self.identity_basis(neutral))

    def encode(self, expressive: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """E_exp: expressive meshes (B, V, 3) of the subjects with neutrals (B, V, 3) -> codes (B, D)."""
        codes = self.encode_displacements((expressive - neutral).unsqueeze(1), self.identity_basis(neutral))
        return codes.squeeze(1)

    def encode_displacements(self, displacements: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Codes (B, E, D) of E displacements (B, E, V, 3) per identity basis (B, D, V, 3): ridge least squares,
        one D x D system per identity."""
        flat = basis.flatten(2)  # (B, D, 3V)
        gram = flat @ flat.transpose(1, 2)
        ridge = self.config.ridge * gram.diagonal(dim1=1, dim2=2).mean(1)
        gram = gram + ridge[:, None, None] * torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
        rhs = flat @ displacements.flatten(2).transpose(1, 2)  # (B, D, E)
        return torch.linalg.solve(gram, rhs).transpose(1, 2)

    @staticmethod
    def decode_with_basis(codes: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Displacements (B, E, V, 3) of codes (B, E, D) on per-identity bases (B, D, V, 3)."""
        return torch.einsum("bed,bdvi->bevi", codes, basis)

    # -- persistence: tensors only (safetensors) plus a JSON of the config and provenance --

    def save(self, directory: str | Path, name: str = WEIGHTS_NAME, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(torch.float16 if k != "template" else torch.float32).contiguous()
                   for k, v in self.state_dict().items()}
        save_file(tensors, directory / f"{name}.safetensors")
        info = {"config": asdict(self.config), **(metadata or {})}
        (directory / f"{name}.json").write_text(json.dumps(info, indent=2))
        return directory / f"{name}.safetensors"

    @classmethod
    def load(cls, directory: str | Path, name: str = WEIGHTS_NAME, device: str | torch.device = "cpu"):
        from safetensors.torch import load_file

        directory = Path(directory)
        info = json.loads((directory / f"{name}.json").read_text())
        tensors = load_file(directory / f"{name}.safetensors", device=str(device))
        model = cls(tensors["template"].float().cpu().numpy(), ExpressionModelConfig(**info["config"]))
        model.load_state_dict({k: v.float() for k, v in tensors.items()})
        return model.to(device).eval()

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = None) -> ExpressionModel:
        """The checkpoint shipped in the package (`serep_engine/weights/`)."""
        from serep_engine.device import pick_device

        with resources.as_file(resources.files("serep_engine") / "weights") as weights_dir:
            return cls.load(weights_dir, device=pick_device(device))
