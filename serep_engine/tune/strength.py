"""Per-region strength in code space: how much of a code each face region's ARKit shapes carry.

A code c is split into the parts carried by the ARKit shapes of each region (brows, eyes, cheeks, mouth, jaw;
the shapes' codes A, (52, D), from E_exp of ICT's shapes on the template): the shape weights a that best
reproduce c's displacement (least squares in the template's displacement metric G = B B^T, lightly ridged)
are a = c Q, and region r's part is c_r = a[S_r] A[S_r] = c R_r with R_r = Q[:, S_r] A[S_r]. Whatever the
shapes do not span stays as it is. Strengths then act as one (D, D) matrix,
    c' = strength * (c + sum_r (multiplier_r - 1) c R_r),
so they are linear, exactly the identity at 1, and carry to every target (they live in code space).
"""

from __future__ import annotations

import numpy as np

REGIONS = ("brows", "eyes", "cheeks", "mouth", "jaw")
_REGION_OF_PREFIX = (("brow", "brows"), ("eye", "eyes"), ("cheek", "cheeks"), ("nose", "cheeks"),
                     ("mouth", "mouth"), ("tongue", "mouth"), ("jaw", "jaw"))
RIDGE = 1e-3  # relative to the mean diagonal of the shapes' Gram matrix


def region_of(arkit_name: str) -> str:
    """The strength region of an ARKit shape (`mouthSmileLeft` -> "mouth", `noseSneerLeft` -> "cheeks")."""
    for prefix, region in _REGION_OF_PREFIX:
        if arkit_name.startswith(prefix):
            return region
    raise ValueError(f"no strength region for {arkit_name!r}")


def region_maps(shape_codes: np.ndarray, names, template_basis: np.ndarray) -> np.ndarray:
    """(5, D, D) float32, REGIONS' order: `shape_codes` (S, D) the codes of the ARKit shapes `names`,
    `template_basis` (D, V, 3) the template's displacement per code unit."""
    flat = template_basis.reshape(len(template_basis), -1).astype(np.float64)
    gram = flat @ flat.T  # (D, D): the displacement metric in code space
    shapes = np.asarray(shape_codes, np.float64)
    present = np.abs(shapes).sum(1) > 0  # tongueOut has no ICT shape
    shapes, names = shapes[present], [n for n, here in zip(names, present, strict=True) if here]
    normal = shapes @ gram @ shapes.T
    normal += RIDGE * normal.diagonal().mean() * np.eye(len(normal))
    solve = gram @ shapes.T @ np.linalg.inv(normal)  # Q: (D, S), shape weights of a code
    regions = np.array([region_of(n) for n in names])
    return np.stack([solve[:, regions == r] @ shapes[regions == r] for r in REGIONS]).astype(np.float32)


def strength_matrix(maps: np.ndarray, strength: float = 1.0, multipliers: dict[str, float] | None = None,
                    names=REGIONS) -> np.ndarray:
    """(D, D): codes @ it applies an overall strength and per-region multipliers ({region: m}, 1 when absent)."""
    multipliers = multipliers or {}
    unknown = set(multipliers) - set(names)
    if unknown:
        raise ValueError(f"unknown strength regions {sorted(unknown)} (known: {', '.join(names)})")
    matrix = np.eye(maps.shape[1])
    for name, region_map in zip(names, maps, strict=True):
        matrix += (multipliers.get(name, 1.0) - 1.0) * region_map
    return (strength * matrix).astype(np.float32)
