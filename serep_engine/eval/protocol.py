"""The MultiREX region protocol: per region, rigid Kabsch alignment (no scale) of the predicted mesh to
the ground truth on the region's alignment vertices, then the mean per-vertex L2 distance on the region,
in millimetres. `mean` is the average of the four regions."""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import MM_PER_CM, ICTModel
from serep_engine.facemodel.regions import REGION_NAMES, alignment_masks, region_masks


def kabsch_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rigidly move (F, N, 3) source point sets onto target (rotation + translation, no scale)."""
    source_centre, target_centre = source.mean(1, keepdims=True), target.mean(1, keepdims=True)
    cross = np.einsum("fni,fnj->fij", source - source_centre, target - target_centre)
    u, _, vt = np.linalg.svd(cross)
    flip = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= flip[:, None]
    rotation = u @ vt  # applied as row vectors: x @ R
    return (source - source_centre) @ rotation + target_centre


def region_errors_mm(face_model: ICTModel, predicted: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame errors (F,) per region for (F, V, 3) predicted and ground-truth meshes in cm."""
    regions, aligned_on = region_masks(face_model), alignment_masks(face_model)
    errors = {}
    for name in REGION_NAMES:
        align, region = aligned_on[name], regions[name]
        moved = kabsch_align(predicted[:, align].astype(np.float64), truth[:, align].astype(np.float64))
        in_region = region[align]
        errors[name] = np.linalg.norm(moved[:, in_region] - truth[:, region], axis=2).mean(1) * MM_PER_CM
    return errors


def summarise(errors: dict[str, np.ndarray]) -> dict[str, float]:
    """{"forehead", "nose", "cheek", "mouth", "mean"} averaged over frames."""
    out = {name: round(float(np.mean(errors[name])), 4) for name in REGION_NAMES}
    out["mean"] = round(float(np.mean([out[name] for name in REGION_NAMES])), 4)
    return out
