"""Identities drawn from the ICT PCA modes and their identity-specific expression shapes.

ICT's 53 expression shapes are the same deltas on every face. Identity-specific shapes are made here by
deformation transfer of each shape from the generic neutral onto the identity's neutral, and cached on
disk (one `.npy` per identity, keyed by the identity weights and the transfer's version).
"""

from __future__ import annotations

import hashlib
from functools import cache

import numpy as np

from serep_engine.cache import cached_array
from serep_engine.facemodel.deformation_transfer import DeformationTransfer, outer_boundary
from serep_engine.facemodel.ict import EVAL_SEEDS, TRAIN_SEEDS, ICTModel
from serep_engine.paths import cache_dir

TRANSFER_VERSION = "dt-v1"
STYLISED_SCALE = 2.5


def training_identity(model: ICTModel, index: int) -> np.ndarray:
    """Identity weights of training identity `index`: typical to exaggerated proportions
    (per-mode std spread over [0.5, 3.0] by a golden-ratio sequence), from training seeds only."""
    scale = 0.5 + 2.5 * ((index * 0.6180339887) % 1.0)
    return model.identity_weights(TRAIN_SEEDS[index], scale)


def eval_identity(model: ICTModel, index: int, stylised: bool = False) -> np.ndarray:
    """Evaluation identity `index` (typical N(0,1), or stylised N(0, 2.5^2)); never used in training."""
    offset = 500_000 if stylised else 0
    return model.identity_weights(EVAL_SEEDS[offset + index], STYLISED_SCALE if stylised else 1.0)


@cache
def _template_transfer_setup(model: ICTModel) -> tuple[np.ndarray, np.ndarray]:
    triangles = model.face_triangles
    return triangles, outer_boundary(triangles, len(model.face_neutral))


def identity_shapes(model: ICTModel, weights: np.ndarray) -> np.ndarray:
    """(53, V, 3) expression displacements of the identity on the face template (cached)."""
    key = hashlib.sha1(np.ascontiguousarray(weights, np.float32).tobytes() + TRANSFER_VERSION.encode()).hexdigest()
    return transferred_shapes(model, model.identity_neutral(weights), key[:20])


def transferred_shapes(model: ICTModel, neutral: np.ndarray, cache_key: str) -> np.ndarray:
    """(53, V, 3) ICT's expression shapes carried onto `neutral` (template topology) by deformation transfer,
    cached as `identity_shapes/<cache_key>.npy`."""

    def transfer() -> np.ndarray:
        triangles, anchors = _template_transfer_setup(model)
        source = model.face_neutral
        return DeformationTransfer(neutral, triangles, anchors).transfer_many(
            source, source[None] + model.face_expression_basis)

    return cached_array(cache_dir() / "identity_shapes" / f"{cache_key}.npy", transfer)
