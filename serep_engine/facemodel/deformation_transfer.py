"""Deformation transfer (Sumner & Popovic 2004) between meshes of one topology.

Each triangle gets a fourth vertex off its plane, so its 3x3 edge matrix is invertible. The source's
per-triangle deformation gradients S_j = V'_j V_j^-1 are carried onto the target by solving, for the
target's deformed vertices x (and the fourth vertices), the least-squares problem

    min_x  sum_j || X_j(x) W_j^-1 - S_j ||_F^2  +  anchor^2 * sum_i || x_i - (w_i + d_i) ||^2

where W_j is the target's rest edge matrix, d_i the source displacement of the anchor vertices (the
vertices no expression moves, which pins translation). The normal matrix depends only on the target,
so it is factorised once per identity and every shape is a back-substitution.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph  # noqa: F401  (sp.csgraph)
import scipy.sparse.linalg as spla


def edge_matrices(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 3, 3) matrices whose columns are v2-v1, v3-v1 and the scaled normal v4-v1."""
    v1, v2, v3 = (vertices[triangles[:, i]].astype(np.float64) for i in range(3))
    e1, e2 = v2 - v1, v3 - v1
    normal = np.cross(e1, e2)
    normal /= np.sqrt(np.linalg.norm(normal, axis=1, keepdims=True)).clip(1e-12)
    return np.stack([e1, e2, normal], axis=2)


def deformation_gradients(rest: np.ndarray, deformed: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T, 3, 3) per-triangle deformation gradients S_j with S_j V_j = V'_j."""
    return edge_matrices(deformed, triangles) @ np.linalg.inv(edge_matrices(rest, triangles))


class DeformationTransfer:
    """The factorised transfer problem for one target rest mesh."""

    def __init__(self, target_rest: np.ndarray, triangles: np.ndarray, anchors: np.ndarray, anchor_weight=1.0):
        self.target_rest = np.asarray(target_rest, np.float64)
        self.triangles = triangles
        self.anchors = np.asarray(anchors, np.int64)
        self.anchor_weight = anchor_weight
        n_vertices, n_triangles = len(target_rest), len(triangles)
        # E_j picks the rows (x2-x1, x3-x1, x4-x1) of the edge matrix; unknowns: vertices then 4th vertices.
        w_inv_t = np.linalg.inv(edge_matrices(self.target_rest, triangles)).transpose(0, 2, 1)  # (T,3,3)
        corner = np.stack([triangles[:, 1], triangles[:, 2], n_vertices + np.arange(n_triangles)], axis=1)
        rows, cols, vals = [], [], []
        tri_rows = 3 * np.arange(n_triangles)[:, None]
        for r in range(3):  # row r of W^-T E
            for c in range(3):  # column c of W^-T: multiplies (corner_c - v1)
                coef = w_inv_t[:, r, c]
                rows += [tri_rows[:, 0] + r, tri_rows[:, 0] + r]
                cols += [corner[:, c], triangles[:, 0]]
                vals += [coef, -coef]
        self.A = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(3 * n_triangles, n_vertices + n_triangles),
        )
        anchor_rows = sp.csr_matrix(
            (np.full(len(self.anchors), anchor_weight), (np.arange(len(self.anchors)), self.anchors)),
            shape=(len(self.anchors), n_vertices + n_triangles),
        )
        self.P = anchor_rows
        # Each fourth vertex belongs to one triangle, so the normal matrix's fourth-vertex block is diagonal
        # and eliminating it (Schur complement) leaves a mesh-sparse system over the vertices only.
        normal = (self.A.T @ self.A + self.P.T @ self.P).tocsr()
        self._inverse_ff = 1.0 / normal[n_vertices:, n_vertices:].diagonal()
        self._m_vf = normal[:n_vertices, n_vertices:]
        schur = normal[:n_vertices, :n_vertices] - self._m_vf @ sp.diags(self._inverse_ff) @ self._m_vf.T
        self._factor = spla.splu(schur.tocsc())
    @property
    def n_vertices(self) -> int:
        return len(self.target_rest)

    def displacements_from_gradients(self, gradient_offsets: np.ndarray, anchor_displacements: np.ndarray):
        """(K, V, 3) target displacements for K deformation-gradient fields I + G (G: (K, T, 3, 3)) with the
        anchors displaced by (K, n_anchors, 3). Linear in both: the rest mesh solves the problem for G = 0."""
        return self.solve(self.rhs(gradient_offsets, anchor_displacements))

    def rhs(self, gradient_offsets: np.ndarray, anchor_displacements: np.ndarray) -> np.ndarray:
        """Normal-equation right-hand sides (unknowns, 3K): row 3j+r of A x_c approximates G_j[c, r]."""
        k = len(gradient_offsets)
        b = gradient_offsets.transpose(0, 1, 3, 2).reshape(k, -1, 3)  # (K, 3T, 3)
        rhs = self.A.T @ b.transpose(1, 0, 2).reshape(b.shape[1], 3 * k)
        anchors = anchor_displacements.transpose(1, 0, 2).reshape(len(self.anchors), 3 * k)
        return rhs + self.P.T @ (self.anchor_weight * anchors)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """Vertex part (K, V, 3) of the normal equations' solution for right-hand sides (unknowns, 3K)."""
        k = rhs.shape[1] // 3
        n = self.n_vertices
        reduced = rhs[:n] - self._m_vf @ (self._inverse_ff[:, None] * rhs[n:])
        vertices = self._factor.solve(np.asarray(reduced, np.float64))
        return vertices.reshape(n, k, 3).transpose(1, 0, 2)

    def adjoint(self, grad_displacements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients of a loss with respect to G (K, T, 3, 3) and the anchor displacements (K, n_anchors, 3),
        given its gradient with respect to the displacements (K, V, 3). The normal matrix is symmetric."""
        k = len(grad_displacements)
        y_vertices = self._factor.solve(grad_displacements.transpose(1, 0, 2).reshape(self.n_vertices, 3 * k))
        y = np.vstack([y_vertices, -self._inverse_ff[:, None] * (self._m_vf.T @ y_vertices)])
        grad_b = (self.A @ y).reshape(-1, 3, k, 3).transpose(2, 0, 3, 1)  # (K, T, c, r) -> G[c, r]
        grad_anchor = (self.anchor_weight * (self.P @ y)).reshape(len(self.anchors), k, 3).transpose(1, 0, 2)
        return grad_b, grad_anchor

    def transfer(self, source_rest: np.ndarray, source_deformed: np.ndarray) -> np.ndarray:
        """Target displacements (V, 3) reproducing source_deformed's deformation gradients."""
        return self.transfer_many(source_rest, source_deformed[None])[0]

    def transfer_many(self, source_rest: np.ndarray, source_deformed: np.ndarray) -> np.ndarray:
        """(K, V, 3) target displacements for (K, V, 3) deformed source meshes (one solve for all K)."""
        rest_inverse = np.linalg.inv(edge_matrices(source_rest, self.triangles))
        offsets = np.stack([edge_matrices(d, self.triangles) @ rest_inverse for d in source_deformed]) - np.eye(3)
        anchor_displacements = (source_deformed - source_rest)[:, self.anchors]
        return self.displacements_from_gradients(offsets, anchor_displacements).astype(np.float32)


def outer_boundary(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """Vertices of the longest boundary loop (for the face template: where it meets the back of the head,
    leaving the eye and mouth openings free)."""
    edges = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    graph = sp.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n_vertices,) * 2)
    _, labels = sp.csgraph.connected_components(graph, directed=False)
    boundary_vertices = np.unique(boundary)
    loop_labels, loop_sizes = np.unique(labels[boundary_vertices], return_counts=True)
    return boundary_vertices[labels[boundary_vertices] == loop_labels[np.argmax(loop_sizes)]]
