"""Shape-key bases for baking: K keys whose per-frame weights reproduce the per-frame displacements.

Decoding onto one identity is linear in the code, so the exact basis is the identity's decoded basis
(one key per code dimension) with the codes as weights. `compress` trades keys for a stated error:
a truncated SVD of the frames actually captured, keeping the fewest keys whose largest per-vertex
error over all frames stays within the tolerance.
"""

from __future__ import annotations

import numpy as np


def compress(basis: np.ndarray, weights: np.ndarray, tolerance_cm: float = 0.005, max_keys: int | None = None):
    """(basis (K', V, 3), weights (F, K'), largest error in cm) with K' <= K keys reproducing
    weights @ basis to `tolerance_cm` per vertex on every frame (or the best with `max_keys`)."""
    k, v, _ = basis.shape
    flat = basis.reshape(k, -1).astype(np.float64)
    # Work in code space: displacements = weights @ flat, and flat has an orthonormal row basis q.
    q, r = np.linalg.qr(flat.T)  # flat.T = q r, q (3V, K)
    u, s, vt = np.linalg.svd(weights.astype(np.float64) @ r.T, full_matrices=False)  # (F, K) in q's coordinates
    limit = min(max_keys or len(s), len(s))
    target = (weights.astype(np.float64) @ flat).reshape(len(weights), v, 3)

    def truncated(keys: int):
        new_weights = u[:, :keys] * s[:keys]
        new_basis = (q @ vt[:keys].T).T.reshape(keys, v, 3)
        error = np.linalg.norm(np.tensordot(new_weights, new_basis, axes=1) - target, axis=2).max()
        return new_basis, new_weights, float(error)

    low, high = 1, limit  # the error falls as keys are added: bisect for the fewest within tolerance
    while low < high:
        middle = (low + high) // 2
        if truncated(middle)[2] <= tolerance_cm:
            high = middle
        else:
            low = middle + 1
    new_basis, new_weights, error = truncated(low)
    return new_basis.astype(np.float32), new_weights.astype(np.float32), error
