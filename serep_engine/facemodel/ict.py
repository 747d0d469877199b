"""ICT-FaceKit light model: loading (packed .npz or an original OBJ checkout) and identity sampling.

Units are centimetres throughout the engine; reported errors are converted to millimetres.
The engine's template is the face area (ICT part `face`, vertices 0..9408).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from serep_engine.paths import data_dir

FACE_VERTEX_COUNT = 9409  # ICT part `face`: vertices [0, 9409), polygons [0, 9230)
FACE_POLYGON_COUNT = 9230
MM_PER_CM = 10.0

# Seed ranges: training identities and evaluation identities never overlap.
TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000, 2_000_000)

ICT_EXPRESSION_NAMES = (
    "browDown_L",
    "browDown_R",
    "browInnerUp_L",
    "browInnerUp_R",
    "browOuterUp_L",
    "browOuterUp_R",
    "cheekPuff_L",
    "cheekPuff_R",
    "cheekSquint_L",
    "cheekSquint_R",
    "eyeBlink_L",
    "eyeBlink_R",
    "eyeLookDown_L",
    "eyeLookDown_R",
    "eyeLookIn_L",
    "eyeLookIn_R",
    "eyeLookOut_L",
    "eyeLookOut_R",
    "eyeLookUp_L",
    "eyeLookUp_R",
    "eyeSquint_L",
    "eyeSquint_R",
    "eyeWide_L",
    "eyeWide_R",
    "jawForward",
    "jawLeft",
    "jawOpen",
    "jawRight",
    "mouthClose",
    "mouthDimple_L",
    "mouthDimple_R",
    "mouthFrown_L",
    "mouthFrown_R",
    "mouthFunnel",
    "mouthLeft",
    "mouthLowerDown_L",
    "mouthLowerDown_R",
    "mouthPress_L",
    "mouthPress_R",
    "mouthPucker",
    "mouthRight",
    "mouthRollLower",
    "mouthRollUpper",
    "mouthShrugLower",
    "mouthShrugUpper",
    "mouthSmile_L",
    "mouthSmile_R",
    "mouthStretch_L",
    "mouthStretch_R",
    "mouthUpperUp_L",
    "mouthUpperUp_R",
    "noseSneer_L",
    "noseSneer_R",
)
# Template vertex of each Multi-PIE 68-point landmark (the same as the packed file's `landmarks_multipie68`).
ICT_LANDMARKS68 = (
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927,
    3924, 2608, 3272, 4088, 3443, 268, 493, 1914, 2044, 1401, 3615, 4240,
    4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732,
    5708, 5695, 2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841,
    5702, 5711, 5533, 6216, 6207, 6470, 5517, 5966,
)


def default_ict_path() -> Path:
    return data_dir() / "ict_facekit" / "ict_facekit.npz"


@dataclass(frozen=True, eq=False)
class ICTModel:
    """The linear ICT model: mesh = neutral + identity_basis^T w_id + expression_basis^T w_exp."""

    neutral: np.ndarray  # (N, 3) float32, cm
    polygons: np.ndarray  # (P, 4) int32, -1 pads triangles
    identity_basis: np.ndarray  # (100, N, 3)
    expression_basis: np.ndarray  # (53, N, 3)
    expression_names: tuple[str, ...]
    landmarks68: np.ndarray  # (68,) vertex indices, Multi-PIE order
    polygon_material: np.ndarray | None = None
    materials: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> ICTModel:
        """Load the packed `.npz` or an ICT-FaceKit checkout folder (its FaceXModel/ OBJ files)."""
        path = Path(path) if path is not None else default_ict_path()
        if path.is_dir():
            return _load_ict_checkout(path)
        if not path.exists():
            raise FileNotFoundError(f"ICT-FaceKit model not found at {path} (set SEREP_DATA)")
        with np.load(path, allow_pickle=False) as d:
            return cls(
                neutral=d["neutral"].astype(np.float32),
                polygons=d["polygons"].astype(np.int32),
                identity_basis=d["identity_basis"].astype(np.float32),
                expression_basis=d["expression_basis"].astype(np.float32),
                expression_names=tuple(str(s) for s in d["expression_names"]),
                landmarks68=d["landmarks_multipie68"].astype(np.int64),
                polygon_material=d["polygon_material"].astype(np.int16),
                materials=tuple(str(s) for s in d["materials"]),
            )

    @cached_property
    def face_triangles(self) -> np.ndarray:
        """Triangles (T, 3) of the face template; quads split along their 0-2 diagonal."""
        return quads_to_triangles(self.polygons[:FACE_POLYGON_COUNT])

    @property
    def face_neutral(self) -> np.ndarray:
        return self.neutral[:FACE_VERTEX_COUNT]

    @property
    def face_expression_basis(self) -> np.ndarray:
        return self.expression_basis[:, :FACE_VERTEX_COUNT]

    def identity_weights(self, seed: int, scale: float = 1.0) -> np.ndarray:
        """Identity PCA weights for one seed: N(0, scale^2) per mode (scale 2.5 = stylised)."""
        return (np.random.default_rng(seed).standard_normal(len(self.identity_basis)) * scale).astype(np.float32)

    def identity_neutral(self, weights: np.ndarray, face_only: bool = True) -> np.ndarray:
        """Neutral mesh of an identity, face template vertices by default."""
        count = FACE_VERTEX_COUNT if face_only else len(self.neutral)
        basis = self.identity_basis[:, :count].reshape(len(weights), -1)
        return self.neutral[:count] + (weights @ basis).reshape(count, 3)


def quads_to_triangles(polygons: np.ndarray) -> np.ndarray:
    tri_a = polygons[:, [0, 1, 2]]
    quads = polygons[:, 3] >= 0
    tri_b = polygons[quads][:, [0, 2, 3]]
    return np.concatenate([tri_a, tri_b]).astype(np.int64)


def _read_obj(path: Path) -> tuple[np.ndarray, list[list[int]]]:
    vertices, faces = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]])
    return np.asarray(vertices, np.float32), faces


def _load_ict_checkout(root: Path) -> ICTModel:
    """Read an original ICT-FaceKit checkout: FaceXModel/generic_neutral_mesh.obj, identity*.obj and
    the ARKit-named expression OBJs. Deltas are taken against the generic neutral."""
    model_dir = root / "FaceXModel" if (root / "FaceXModel").is_dir() else root
    neutral, faces = _read_obj(model_dir / "generic_neutral_mesh.obj")
    polygons = np.full((len(faces), 4), -1, np.int32)
    for i, face in enumerate(faces):
        polygons[i, : len(face)] = face[:4]
    identity_files = sorted(model_dir.glob("identity[0-9]*.obj"))
    identity_basis = np.stack([_read_obj(p)[0] - neutral for p in identity_files])
    expression_basis = np.stack([_read_obj(model_dir / f"{n}.obj")[0] - neutral for n in ICT_EXPRESSION_NAMES])
    return ICTModel(
        neutral=neutral,
        polygons=polygons,
        identity_basis=identity_basis.astype(np.float32),
        expression_basis=expression_basis.astype(np.float32),
        expression_names=ICT_EXPRESSION_NAMES,
        landmarks68=np.asarray(ICT_LANDMARKS68, np.int64),
    )
