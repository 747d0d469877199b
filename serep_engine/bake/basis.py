"""Shape-key bases for baking: K keys whose per-frame weights reproduce the per-frame displacements.

Decoding onto one identity is linear in the code, so the exact basis is the identity's decoded basis
(one key per code dimension) with the codes as weights. `compress` trades keys for a stated error:
a truncated SVD of the frames actually captured, keeping the fewest keys whose largest per-vertex
error over all frames stays within the tolerance.

Memory does not grow with clip length x vertices: the SVD runs in code space (F x K), and the error of a
truncation is evaluated a block of frames at a time from the dropped components alone.
"""

from __future__ import annotations

import numpy as np

# Frames per block when measuring a truncation's error (float32, ample for errors of 1e-3 cm and up).
ERROR_BLOCK_VALUES = 1 << 22  # about 16 MB per block, whatever the vertex count


def compress(basis: np.ndarray, weights: np.ndarray, tolerance_cm: float = 0.005, max_keys: int | None = None):
    """(basis (K', V, 3), weights (F, K'), largest error in cm) with K' <= K keys reproducing
    weights @ basis to `tolerance_cm` per vertex on every frame (or the best with `max_keys`)."""
    k, v, _ = basis.shape
    flat = basis.reshape(k, -1).astype(np.float64)
    # Work in code space: displacements = weights @ flat, and flat has an orthonormal row basis q.
    q, r = np.linalg.qr(flat.T)  # flat.T = q r, q (3V, K)
    u, s, vt = np.linalg.svd(weights.astype(np.float64) @ r.T, full_matrices=False)  # (F, K) in q's coordinates
    components = vt @ q.T  # (K, 3V): orthonormal rows; displacements = (u * s) @ components
    limit = min(max_keys or len(s), len(s))
    block = max(1, ERROR_BLOCK_VALUES // (3 * v))

    def error(keys: int, give_up_above: float = np.inf) -> float:
        """Largest per-vertex norm of the dropped components' sum over all frames, a block of frames at a time.
        A frame's whole dropped norm bounds its per-vertex errors, so frames go largest bound first and the
        scan ends once no frame left can beat the worst so far (or the worst passes `give_up_above`)."""
        if keys >= len(s):
            return 0.0
        dropped, tails = components[keys:].astype(np.float32), (u[:, keys:] * s[keys:]).astype(np.float32)
        bounds = np.linalg.norm(tails, axis=1) * (1 + 1e-5)  # float32 headroom
        order = np.argsort(-bounds)
        worst = 0.0
        for first in range(0, len(order), block):
            frames = order[first:first + block]
            if bounds[frames[0]] <= worst or worst > give_up_above:
                break
            residual = tails[frames] @ dropped
            worst = max(worst, float(np.sqrt((residual.reshape(-1, v, 3) ** 2).sum(axis=2).max())))
        return worst

    low, high = 1, limit  # the error falls as keys are added: bisect for the fewest within tolerance
    while low < high:
        middle = (low + high) // 2
        if error(middle, give_up_above=tolerance_cm) <= tolerance_cm:
            high = middle
        else:
            low = middle + 1
    new_basis = components[:low].reshape(low, v, 3).astype(np.float32)
    new_weights = (u[:, :low] * s[:low]).astype(np.float32)
    return new_basis, new_weights, error(low)
