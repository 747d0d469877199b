"""Shape-key bases for baking: K keys whose per-frame weights reproduce the per-frame displacements.

Decoding onto one identity is linear in the code, so the exact basis is the identity's decoded basis
(one key per code dimension) with the codes as weights. `compress` trades keys for a stated error:
a truncated SVD of the frames actually captured, keeping the fewest keys whose largest per-vertex
error over all frames stays within the tolerance.

Memory does not grow with clip length x vertices, and time grows linearly with each: the SVD runs in code
space (F x K), and a truncation's error is measured from the dropped components alone, a block of frames at
a time, skipping the frames and vertices that cannot reach the tolerance (or the worst error found so far).
"""

from __future__ import annotations

import numpy as np

# Values per block when measuring a truncation's error: a (frames, moving vertices x 3) float32 array at a time.
ERROR_BLOCK_VALUES = 1 << 22  # about 16 MB, whatever the vertex count
HEADROOM = 1 + 1e-4  # bounds computed in float32 are loosened by this much, so that they stay bounds


def compress(basis: np.ndarray, weights: np.ndarray, tolerance_cm: float = 0.005, max_keys: int | None = None):
    """(basis (K', V, 3), weights (F, K'), largest error in cm) with K' <= K keys reproducing
    weights @ basis to `tolerance_cm` per vertex on every frame (or the best with `max_keys`)."""
    k, v, _ = basis.shape
    flat = basis.reshape(k, -1).astype(np.float64)
    # Orthonormal rows spanning the keys, from their Gram matrix (far cheaper than a QR of the tall (3V, K)
    # matrix): flat = (vectors * sqrt(values)) @ rows. Keys adding nothing (eigenvalue ~ 0) drop out.
    values, vectors = np.linalg.eigh(flat @ flat.T)
    keep = values > max(values[-1], 0.0) * 1e-12
    if not keep.any():  # every key is zero: nothing moves
        return np.zeros((1, v, 3), np.float32), np.zeros((len(weights), 1), np.float32), 0.0
    vectors, roots = vectors[:, keep], np.sqrt(values[keep])
    u, s, vt = np.linalg.svd(weights.astype(np.float64) @ (vectors * roots), full_matrices=False)
    components = (vt @ (vectors / roots).T) @ flat  # (K, 3V) orthonormal: displacements = (u * s) @ components
    limit = min(max_keys or len(s), len(s))
    single = components.astype(np.float32).reshape(len(s), v, 3)
    # |vertex's components from k on|, for every k at once: a suffix sum of the per-component squared norms
    per_component = np.einsum("kvi,kvi->kv", single, single)
    from_key = np.sqrt(np.cumsum(per_component[::-1], axis=0)[::-1])

    def error(keys: int, tolerance: float | None = None) -> float:
        """Largest per-vertex norm of the dropped components' sum over all frames. A frame's error at a vertex
        is at most |frame's dropped weights| x |vertex's dropped components| (Cauchy-Schwarz), so vertices
        and frames whose bound is within the floor (the tolerance, when only meeting it matters; else the
        worst so far) are never computed. With a tolerance the scan stops once it is exceeded."""
        if keys >= len(s):
            return 0.0
        tails = (u[:, keys:] * s[keys:]).astype(np.float32)
        frame_bound = np.linalg.norm(tails, axis=1) * HEADROOM
        vertex_bound = np.minimum(from_key[keys] * HEADROOM, 1.0)
        floor = 0.0 if tolerance is None else tolerance
        moving = np.flatnonzero(vertex_bound * frame_bound.max() > floor)
        if len(moving) == 0:
            return 0.0
        dropped = single[keys:, moving].reshape(len(s) - keys, -1)
        reach = vertex_bound[moving].max()
        order = np.argsort(-frame_bound)
        block = max(1, ERROR_BLOCK_VALUES // dropped.shape[1])
        worst = 0.0
        for first in range(0, len(order), block):
            frames = order[first:first + block]
            if frame_bound[frames[0]] * reach <= max(worst, floor):
                break
            residual = (tails[frames] @ dropped).reshape(len(frames), -1, 3)
            squared = residual[..., 0] ** 2 + residual[..., 1] ** 2 + residual[..., 2] ** 2
            worst = max(worst, float(np.sqrt(squared.max())))
            if tolerance is not None and worst > tolerance:
                break
        return worst

    low, high = 1, limit  # the error falls as keys are added: bisect for the fewest within tolerance
    while low < high:
        middle = (low + high) // 2
        if error(middle, tolerance_cm) <= tolerance_cm:
            high = middle
        else:
            low = middle + 1
    new_basis = components[:low].reshape(low, v, 3).astype(np.float32)
    new_weights = (u[:, :low] * s[:low]).astype(np.float32)
    return new_basis, new_weights, error(low)
