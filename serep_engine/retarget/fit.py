"""Fitting the face template to a user mesh, and carrying template displacements onto the user's vertices.

1. Landmarks: found automatically (`landmarks.find_landmarks`) or given (68 vertex indices or points in the
   iBUG order) -> a similarity transform user -> template frame (cm, ICT orientation).
2. Identity fit: ICT's 100 identity modes and the similarity, alternately, against the user's surface
   (point-to-plane, matches rejected by distance, normal direction and the user mesh's open borders) and the
   landmarks, with a Gaussian prior on the modes. This gives a face whose vertices mean what the template's
   mean (lip corners on lip corners), which surface-only registration cannot.
3. Non-rigid ICP from that fit (Laplacian-regularised offsets, decreasing stiffness, point-to-plane targets): the
   template's surface onto the user's where the identity modes cannot reach.
   Written here rather than taken from trimesh's `registration.nricp_*`: without the optional `rtree` those
   match template vertices to the nearest target *vertex* with unsigned normals (bumpy on coarse meshes,
   upper and lower lip confused) and re-solve a 4V x 4V system every iteration (8-9 s for 30 iterations on
   the 9409-vertex template here), where this solves V x V systems for a few iterations from a close start.
4. Transfer: each user vertex takes the closest point of the registered surface whose normal agrees with its
   own (barycentric weights), times a smooth fall-off with its distance from that surface (so the neck, back
   of head and body stay still), and separate parts that sit away from the face surface (eyeballs, teeth)
   stay still as a whole. The result is one sparse matrix: linear, and fast for a 64-key basis.
5. Lids (`Registration.with_closing_lids`, given the blinks as the expression model decodes them onto the
   registered face): a head whose eyes open wider than the template's would keep a full blink part open (the
   decode keeps the lids' travel, not their closing). Per eye, the lids' motion is scaled so that the blink
   closes them as far as ICT's own blink closes the template's (never less motion than before, at most
   LID_GAIN_MAX times, none where the lids already meet or pass), tapering with the blink's own motion away
   from the lid margin.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph  # noqa: F401  (sp.csgraph)
import scipy.sparse.linalg as spla
from scipy.spatial import cKDTree

from serep_engine.cache import write_atomically
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, ICTModel
from serep_engine.paths import cache_dir
from serep_engine.retarget.landmarks import (
    NoFaceFoundError,
    Similarity,
    find_landmarks,
    robust_similarity,
    umeyama,
)

FIT_VERSION = "fit-v5"  # v5: landmarks from the Tasks Face Landmarker (mediapipe 1.2.3)
IDENTITY_PRIOR = 0.05  # weight of ||w||^2 against ~9000 point-to-plane residuals (cm^2): a light hand
LANDMARK_WEIGHT_AUTO = 0.3  # per landmark, relative to one surface match (mediapipe is a few mm off)
LANDMARK_WEIGHT_GIVEN = 3.0
LANDMARK_OUTLIER_CM = 1.0  # landmarks this far from the fitted face are dropped (contour points off the face)
STIFFNESS = (30.0, 10.0, 3.0)  # non-rigid ICP: Laplacian weights, two iterations each
FALLOFF_CM = (0.3, 2.5)  # full motion within the first distance from the registered face, none beyond the second
# A separate part whose median distance from the face exceeds this stays still (ICT's eyeball shells: 0.45-0.5)
COMPONENT_STILL_CM = 0.3
CONSISTENCY_CM = 0.3  # a vertex whose probe motion differs this much from its neighbours' is re-matched
# 3.6M vertices peaked at 19 GB (422 s) on a 2-core machine: refuse beyond this rather than run out of memory
MAX_VERTICES = 1_500_000
OFFSET_DAMPING = 1e-3  # keeps template parts without matches (and the system) near the identity fit
LID_GAIN_MAX = 2.0
LID_REACH_CM = (1.5, 2.5)  # the lid gain is whole within the first distance of an eye's centre, none beyond
EYES = {"eyeBlink_L": ((43, 44), (47, 46)), "eyeBlink_R": ((37, 38), (41, 40))}  # upper, lower iBUG lid points


class LandmarkError(ValueError):
    """User-given landmarks that cannot be used."""


def _normals(vertices: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted unit vertex normals and unit face normals."""
    v0, v1, v2 = (vertices[triangles[:, i]] for i in range(3))
    face = np.cross(v1 - v0, v2 - v0)
    vertex = np.zeros_like(vertices)
    for i in range(3):
        np.add.at(vertex, triangles[:, i], face)
    unit = np.linalg.norm(face, axis=1, keepdims=True).clip(1e-20)
    return vertex / np.linalg.norm(vertex, axis=1, keepdims=True).clip(1e-20), face / unit


def _boundary_vertices(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    edges = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    mask = np.zeros(n_vertices, bool)
    mask[unique[counts == 1].ravel()] = True
    return mask


class _UserSurface:
    """The user mesh as matching targets: its vertices and triangle centroids with normals, and whether each
    lies on an open border (matches there are rejected: the template reaches past a cropped mesh)."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray):
        vertex_normals, face_normals = _normals(vertices, triangles)
        border = _boundary_vertices(triangles, len(vertices))
        self.points = np.concatenate([vertices, vertices[triangles].mean(1)])
        self.normals = np.concatenate([vertex_normals, face_normals])
        self.border = np.concatenate([border, border[triangles].any(1)])

    def flip(self) -> None:
        self.normals = -self.normals


def _match(model_points, model_normals, points, normals, border, tree, max_distance):
    """Nearest target of each model point; (index, distance, usable) with normals agreeing."""
    distance, index = tree.query(model_points, workers=-1)
    agree = np.einsum("ij,ij->i", model_normals, normals[index])
    return index, distance, (distance < max_distance) & (agree > 0.5) & ~border[index]


def _uniform_laplacian(triangles: np.ndarray, n: int) -> sp.csr_matrix:
    edges = triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    degree = np.asarray(adjacency.sum(1)).ravel().clip(1)
    return (sp.identity(n) - sp.diags(1.0 / degree) @ adjacency).tocsr()


@dataclass
class Registration:
    """The template fitted to one user mesh (see the module docstring)."""

    neutral: np.ndarray  # (9409, 3) the user's neutral in template topology, template frame (cm)
    similarity: Similarity  # user -> template frame
    transfer: sp.csr_matrix  # (V_user, 9409) barycentric weights times fall-off
    landmarks68: np.ndarray  # (68,) user vertex under each iBUG landmark of the registered face
    auto_landmarks: bool
    fit_residual_mm: float  # median distance of the registered face from the user surface
    seconds: float = 0.0
    landmark_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # user-frame points used

    @property
    def scale_to_user(self) -> float:
        """User units per template cm."""
        return 1.0 / self.similarity.scale

    def to_user(self, displacements: np.ndarray) -> np.ndarray:
        """(..., 9409, 3) template-frame displacements (cm) -> (..., V_user, 3) float32 user-frame ones."""
        d = np.asarray(displacements, np.float32)
        lead = d.shape[:-2]
        flat = np.moveaxis(d.reshape(-1, FACE_VERTEX_COUNT, 3), 0, 1).reshape(FACE_VERTEX_COUNT, -1)
        moved = (self.transfer @ flat).reshape(-1, int(np.prod(lead, dtype=int)), 3)
        user = np.moveaxis(moved, 1, 0) @ (self.similarity.rotation / self.similarity.scale).astype(np.float32)
        return user.reshape(*lead, -1, 3).astype(np.float32)

    def with_closing_lids(self, face_model: ICTModel, blinks: dict[str, np.ndarray]) -> Registration:
        """This registration with the lids' motion scaled so that `blinks` (eyeBlink_L / _R decoded onto
        `neutral`) close the eyes (module docstring, step 5)."""
        gain = lid_gain(face_model, self.neutral, blinks)
        return Registration(self.neutral, self.similarity, (self.transfer @ sp.diags(gain)).tocsr(), self.landmarks68,
                            self.auto_landmarks, self.fit_residual_mm, self.seconds, self.landmark_points)

    def save(self, path) -> None:
        t = self.transfer.tocsr()
        np.savez(path, neutral=self.neutral, scale=self.similarity.scale, rotation=self.similarity.rotation,
                 translation=self.similarity.translation, data=t.data, indices=t.indices, indptr=t.indptr,
                 shape=np.array(t.shape), landmarks68=self.landmarks68, auto_landmarks=self.auto_landmarks,
                 fit_residual_mm=self.fit_residual_mm, landmark_points=self.landmark_points)

    @classmethod
    def load(cls, path) -> Registration:
        with np.load(path, allow_pickle=False) as d:
            transfer = sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(d["shape"]))
            return cls(d["neutral"], Similarity(float(d["scale"]), d["rotation"], d["translation"]), transfer,
                       d["landmarks68"], bool(d["auto_landmarks"]), float(d["fit_residual_mm"]),
                       landmark_points=d["landmark_points"])


def mesh_key(vertices: np.ndarray, triangles: np.ndarray, landmarks: np.ndarray | None) -> str:
    digest = hashlib.sha1(FIT_VERSION.encode())
    for array in (np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(triangles, np.int64)):
        digest.update(str(array.shape).encode() + array.tobytes())
    if landmarks is not None:
        digest.update(np.ascontiguousarray(landmarks, np.float64).tobytes())
    return digest.hexdigest()[:24]


def _check_mesh(vertices, triangles):
    vertices = np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) < 100:
        raise ValueError(f"the target mesh needs (V, 3) vertices with V >= 100, got shape {vertices.shape}")
    if triangles.ndim == 2 and triangles.shape[1] == 3 and len(triangles) == 0:
        raise ValueError("the target mesh has no faces (only loose vertices or edges): the engine needs a surface")
    if triangles.ndim != 2 or triangles.shape[1] != 3 or not np.issubdtype(triangles.dtype, np.integer):
        raise ValueError(f"the target mesh needs (T, 3) integer triangles, got {triangles.dtype} {triangles.shape}")
    if len(vertices) > MAX_VERTICES:
        raise ValueError(f"the target mesh has {len(vertices):,} vertices; fitting takes about 5 KB of memory per "
                         f"vertex, so the limit is {MAX_VERTICES:,}: capture onto the mesh under its Subdivision "
                         "modifier (shape keys act below it) or a decimated copy")
    if not np.isfinite(vertices).all():
        raise ValueError("the target mesh has NaN or infinite vertex positions")
    if triangles.min() < 0 or triangles.max() >= len(vertices):
        raise ValueError("the target mesh's triangles refer to vertices that do not exist")
    return vertices, triangles.astype(np.int64)


def _given_landmarks(face_model: ICTModel, vertices: np.ndarray, landmarks) -> tuple[np.ndarray, np.ndarray]:
    """(template vertices, user points) of user-given iBUG-68 landmarks: indices (-1 unknown) or points
    (NaN unknown)."""
    landmarks = np.asarray(landmarks)
    if landmarks.shape == (68,):
        if not np.issubdtype(landmarks.dtype, np.integer):
            raise LandmarkError("landmarks must be 68 integer vertex indices (-1 where unknown)")
        known = landmarks >= 0
        if (landmarks >= len(vertices)).any():
            raise LandmarkError(f"landmark vertex indices must be below the mesh's {len(vertices)} vertices")
        points = np.full((68, 3), np.nan)
        points[known] = vertices[landmarks[known]]
    elif landmarks.shape == (68, 3):
        points = landmarks.astype(np.float64)
    else:
        raise LandmarkError(f"landmarks must have shape (68,) or (68, 3), got {landmarks.shape}")
    known = np.isfinite(points).all(1)
    if known.sum() < 6:
        raise LandmarkError(f"at least 6 of the 68 landmarks are needed, {int(known.sum())} given")
    return face_model.landmarks68[known], points[known]


def fit_target(face_model: ICTModel, vertices, triangles, landmarks=None, use_cache: bool = True,
               log=None) -> Registration:
    """Register the template onto a user mesh (cached per mesh under the engine's cache folder). A mesh built
    on the template's own face topology is mapped vertex for vertex (exact)."""
    vertices, triangles = _check_mesh(vertices, triangles)
    welded, first, inverse = np.unique(vertices, axis=0, return_index=True, return_inverse=True)
    if len(welded) < len(vertices) and not _has_template_topology(face_model, vertices, triangles):
        return _unwelded(face_model, welded, first, inverse.ravel(), triangles, landmarks, use_cache, log)
    path = cache_dir() / "registrations" / f"{mesh_key(vertices, triangles, landmarks)}.npz"
    if use_cache and path.exists():
        return Registration.load(path)
    started = time.perf_counter()
    if _has_template_topology(face_model, vertices, triangles):
        return _save(path if use_cache else None, _fit_same_topology(face_model, vertices, triangles, started))
    if landmarks is None:
        found = find_landmarks(face_model, vertices, triangles)
        lm_vertices, lm_points, similarity = found.template_vertices, found.user_points, found.similarity
        lm_weight = LANDMARK_WEIGHT_AUTO
    else:
        lm_vertices, lm_points = _given_landmarks(face_model, vertices, landmarks)
        similarity, _ = robust_similarity(lm_points, face_model.neutral[lm_vertices], keep=1.0, rounds=1)
        lm_weight = LANDMARK_WEIGHT_GIVEN
    if log:
        log(f"landmarks: {len(lm_points)} ({'automatic' if landmarks is None else 'given'}), "
            f"{time.perf_counter() - started:.1f} s")
    surface = _UserSurface(vertices, triangles)
    weights, similarity = _fit_identity(face_model, surface, similarity, lm_vertices, lm_points, lm_weight)
    neutral = face_model.identity_neutral(weights).astype(np.float64)
    neutral = _nonrigid(face_model, neutral, surface, similarity)
    transfer, distance = _transfer_matrix(face_model, neutral, vertices, triangles, similarity)
    # The iBUG landmarks of the registered face, as the user vertices nearest to them.
    _, nearest = cKDTree(vertices).query(similarity.to_user(neutral[face_model.landmarks68]))
    tree = cKDTree(similarity.to_template(surface.points))
    residual = np.median(tree.query(neutral[:6706])[0]) * 10.0  # over the narrow face, mm
    registration = Registration(neutral, similarity, transfer, nearest.astype(np.int64), landmarks is None,
                                float(residual), time.perf_counter() - started, lm_points)
    _save(path if use_cache else None, registration)
    if log:
        log(f"registered in {registration.seconds:.1f} s, median surface distance {residual:.2f} mm, "
            f"{int((distance < FALLOFF_CM[1]).sum())} of {len(vertices)} vertices move")
    return registration


def _unwelded(face_model, welded, first, inverse, triangles, landmarks, use_cache, log) -> Registration:
    """A mesh with several vertices at one place (split normals or UV seams as some exporters write them, or
    stray duplicates): fitted welded, so that the copies of a vertex move together instead of tearing apart."""
    if landmarks is not None and np.asarray(landmarks).shape == (68,):
        landmarks = np.where(np.asarray(landmarks) >= 0, inverse[np.clip(landmarks, 0, None)], -1)
    registration = fit_target(face_model, welded, inverse[triangles], landmarks, use_cache, log)
    registration.transfer = registration.transfer.tocsr()[inverse]
    registration.landmarks68 = first[registration.landmarks68]
    return registration


def _skew(v: np.ndarray) -> np.ndarray:
    """(N, 3, 3) cross-product matrices: _skew(a) @ b == cross(a, b)."""
    zero = np.zeros(len(v))
    return np.stack([np.stack([zero, -v[:, 2], v[:, 1]], 1), np.stack([v[:, 2], zero, -v[:, 0]], 1),
                     np.stack([-v[:, 1], v[:, 0], zero], 1)], 1)


def _save(path, registration: Registration) -> Registration:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, registration.save)
    return registration


def _has_template_topology(face_model: ICTModel, vertices, triangles) -> bool:
    """Meshes built on ICT's face (the face part first, as in ICT's own head): vertex i is template vertex i."""
    template = face_model.face_triangles
    return (len(vertices) >= FACE_VERTEX_COUNT and len(triangles) >= len(template)
            and np.array_equal(triangles[:len(template)], template))


def _fit_same_topology(face_model: ICTModel, vertices, triangles, started) -> Registration:
    """The exact registration of a template-topology mesh: its own face vertices, mapped one to one."""
    face = vertices[:FACE_VERTEX_COUNT]
    similarity = umeyama(face, face_model.face_neutral.astype(np.float64))
    n = len(vertices)
    transfer = sp.csr_matrix((np.ones(FACE_VERTEX_COUNT), (np.arange(FACE_VERTEX_COUNT), np.arange(FACE_VERTEX_COUNT))),
                             shape=(n, FACE_VERTEX_COUNT))
    return Registration(similarity.to_template(face), similarity, transfer, face_model.landmarks68.copy(), False,
                        0.0, time.perf_counter() - started)


def _fit_identity(face_model, surface, similarity, lm_vertices, lm_points, lm_weight, iterations=20):
    """Identity weights and the similarity together (module docstring, step 2): Gauss-Newton steps in the
    weights and a small similarity (scale, rotation, translation) of the model, which is then moved onto the
    user's side so that the model stays in the template frame."""
    basis = face_model.identity_basis[:, :FACE_VERTEX_COUNT].astype(np.float64)  # (M, V, 3)
    mean = face_model.face_neutral.astype(np.float64)
    triangles = face_model.face_triangles
    modes = len(basis)
    weights = np.zeros(modes)
    lm_basis = basis[:, lm_vertices].transpose(1, 2, 0)  # (L, 3, M)
    for iteration in range(iterations):
        points = similarity.to_template(surface.points)
        normals = surface.normals @ similarity.rotation.T
        tree = cKDTree(points)
        model = mean + np.tensordot(weights, basis, axes=1)
        model_normals, _ = _normals(model, triangles)
        max_distance = 2.0 if iteration < 5 else 1.0
        index, distance, ok = _match(model, model_normals, points, normals, surface.border, tree, max_distance)
        agree = np.einsum("ij,ij->i", model_normals, normals[index])
        if iteration == 0 and np.median(agree[distance < max_distance]) < 0:  # inward-facing normals
            surface.flip()
            normals = -normals
            index, _, ok = _match(model, model_normals, points, normals, surface.border, tree, max_distance)
        # Point-to-plane rows along the user's normal: unknowns (dw, scale, rotation, translation).
        n, x = normals[index[ok]], model[ok]
        rows = np.concatenate([np.einsum("vi,mvi->vm", n, basis[:, ok]), np.einsum("vi,vi->v", n, x)[:, None],
                               np.cross(x, n), n], axis=1)
        rhs = np.einsum("vi,vi->v", n, points[index[ok]] - x)
        # Landmark rows (point-to-point).
        x_lm = model[lm_vertices]
        lm_rows = np.concatenate([lm_basis, x_lm[:, :, None], -_skew(x_lm),
                                  np.broadcast_to(np.eye(3), (len(x_lm), 3, 3))], axis=2).reshape(-1, modes + 7)
        lm_offset = similarity.to_template(lm_points) - x_lm
        inlier = np.linalg.norm(lm_offset, axis=1) < (LANDMARK_OUTLIER_CM if iteration > 1 else 3.0)
        lm_rows = (lm_rows.reshape(len(x_lm), 3, -1) * inlier[:, None, None]).reshape(-1, modes + 7)
        lm_rhs = (lm_offset * inlier[:, None]).ravel()
        prior = np.zeros(modes + 7)
        prior[:modes] = IDENTITY_PRIOR
        lhs = rows.T @ rows + lm_weight * lm_rows.T @ lm_rows + np.diag(prior)
        step = np.linalg.solve(lhs, rows.T @ rhs + lm_weight * lm_rows.T @ lm_rhs - prior * np.r_[weights, [0] * 7])
        weights = weights + step[:modes]
        # The model moved by x -> (1 + s) R x + t; move the user's points by its inverse instead.
        s, omega, t = step[modes], step[modes + 1:modes + 4], step[modes + 4:]
        angle = np.linalg.norm(omega)
        rotation = np.eye(3) if angle < 1e-12 else _axis_angle(omega / angle, angle)
        similarity = Similarity(similarity.scale / (1 + s), rotation.T @ similarity.rotation,
                                rotation.T @ (similarity.translation - t) / (1 + s))
    return weights.astype(np.float32), similarity


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    k = _skew(axis[None])[0]
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _nonrigid(face_model, start, surface, similarity):
    """Non-rigid ICP from the identity fit (module docstring, step 3). No landmark term: the identity fit has
    placed the face's features, and the landmarks' few-mm noise would only dent the surface here."""
    triangles = face_model.face_triangles
    n = len(start)
    laplacian = _uniform_laplacian(triangles, n)
    smooth = (laplacian.T @ laplacian).tocsc()
    points = similarity.to_template(surface.points)
    normals = surface.normals @ similarity.rotation.T
    tree = cKDTree(points)
    offset = np.zeros_like(start)
    for stiffness in STIFFNESS:
        for _ in range(2):
            current = start + offset
            current_normals, _ = _normals(current, triangles)
            index, _, ok = _match(current, current_normals, points, normals, surface.border, tree, 0.5)
            target_normal = normals[index]
            # Point-to-plane as point-to-point: the foot of each vertex on its match's tangent plane.
            along = np.einsum("ij,ij->i", current - points[index], target_normal)
            target = current - along[:, None] * target_normal
            data = sp.diags(ok.astype(np.float64))
            system = (stiffness * smooth + data + OFFSET_DAMPING * sp.identity(n)).tocsc()
            offset = spla.splu(system).solve(data @ (target - start))
    return start + offset


def _closest_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray):
    """Barycentric coordinates (N, 3) of the closest point on triangles (a, b, c) (N, 3 each) to points."""
    ab, ac, ap = b - a, c - a, points - a
    d00, d01, d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
    d20, d21 = (ap * ab).sum(1), (ap * ac).sum(1)
    denominator = np.where(np.abs(d00 * d11 - d01**2) > 1e-20, d00 * d11 - d01**2, 1e-20)
    v = (d11 * d20 - d01 * d21) / denominator
    w = (d00 * d21 - d01 * d20) / denominator
    inside = (v >= 0) & (w >= 0) & (v + w <= 1)
    bary = np.stack([1 - v - w, v, w], 1)
    # Outside the triangle: the best of the three edges.
    best = np.full(len(points), np.inf)
    edge_bary = np.zeros_like(bary)
    for (i, j), (p, q) in zip(((0, 1), (0, 2), (1, 2)), ((a, b), (a, c), (b, c)), strict=True):
        t = np.clip(((points - p) * (q - p)).sum(1) / ((q - p) ** 2).sum(1).clip(1e-20), 0, 1)
        distance = np.linalg.norm(p + t[:, None] * (q - p) - points, axis=1)
        better = distance < best
        best = np.where(better, distance, best)
        candidate = np.zeros_like(bary)
        candidate[:, i], candidate[:, j] = 1 - t, t
        edge_bary[better] = candidate[better]
    return np.where(inside[:, None], bary, edge_bary)


def _transfer_matrix(face_model, neutral, vertices, triangles, similarity, candidates: int = 12):
    """The (V_user, 9409) transfer matrix and each user vertex's distance from the registered face (cm)."""
    template_triangles = face_model.face_triangles
    user = similarity.to_template(vertices)
    user_normals, _ = _normals(user, triangles)
    _, face_normals = _normals(neutral, template_triangles)
    corners = neutral[template_triangles]  # (T, 3, 3)
    _, nearest = cKDTree(corners.mean(1)).query(user, k=candidates, workers=-1)  # (V, k)
    flat = nearest.ravel()
    repeated = np.repeat(user, candidates, axis=0)
    bary = _closest_on_triangles(repeated, corners[flat, 0], corners[flat, 1], corners[flat, 2])
    foot = np.einsum("nk,nki->ni", bary, corners[flat])
    distance = np.linalg.norm(foot - repeated, axis=1).reshape(len(user), candidates)
    agree = np.einsum("ni,ni->n", np.repeat(user_normals, candidates, axis=0), face_normals[flat])
    near_face = distance[:, 0] < FALLOFF_CM[0]
    if near_face.any() and np.median(agree.reshape(len(user), candidates)[near_face, 0]) < 0:
        agree = -agree  # the user's triangles wind the other way
    # Prefer surfaces facing the same way (upper vs lower lip, lid vs eyeball): a penalty, not a ban.
    cost = distance + 0.5 * (agree.reshape(len(user), candidates) < 0.3)
    choice = np.argmin(cost, axis=1)
    rows = np.arange(len(user))
    bary_k = bary.reshape(len(user), candidates, 3)
    choice = _consistent_choice(face_model, triangles, template_triangles[nearest], bary_k,
                                distance, choice)
    picked = nearest[rows, choice]
    picked_bary = bary_k[rows, choice]
    picked_distance = distance[rows, choice]
    near, far = FALLOFF_CM
    t = np.clip((far - picked_distance) / (far - near), 0.0, 1.0)
    falloff = t * t * (3 - 2 * t)
    falloff[_still_components(triangles, len(vertices), picked_distance)] = 0.0
    weights = picked_bary * falloff[:, None]
    matrix = sp.csr_matrix((weights.ravel(), (np.repeat(rows, 3), template_triangles[picked].ravel())),
                           shape=(len(user), len(neutral)))
    return matrix, picked_distance


def lid_closure(face_model: ICTModel, neutral: np.ndarray, shape: np.ndarray, blink: str) -> float:
    """The part of the eye's opening (iBUG lid points, along the neutral's opening) left when `blink`'s shape
    (V, 3) moves `neutral`: 1 open as at rest, 0 closed, below 0 where the lids pass each other."""
    upper, lower = (face_model.landmarks68[list(points)] for points in EYES[blink])
    opening = neutral[upper] - neutral[lower]
    along = opening / np.linalg.norm(opening, axis=1, keepdims=True)
    closed = np.einsum("ni,ni->n", opening + shape[upper] - shape[lower], along)
    return float(closed.mean() / np.linalg.norm(opening, axis=1).mean())


def decoded_blinks(face_model: ICTModel, expression_model, neutral: np.ndarray,
                   bases: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """{eyeBlink_L / _R: (9409, 3)}: ICT's blinks encoded on the template and decoded onto `neutral` by the
    expression model, as a capture carries them. `bases`: the template's and the neutral's (D, 9409, 3) identity
    bases when the caller has them cached. `expression_model`: the torch model or its numpy decoder."""
    from serep_engine.expression.decoder import ExpressionDecoder

    decoder = ExpressionDecoder.of(expression_model)
    names = list(face_model.expression_names)
    shapes = face_model.face_expression_basis[[names.index(b) for b in EYES]].astype(np.float32)
    template, target = bases if bases is not None else (
        decoder.identity_basis(face_model.face_neutral), decoder.identity_basis(neutral))
    decoded = decoder.decode_with_basis(decoder.encode_displacements(shapes, np.asarray(template)), target)
    return dict(zip(EYES, decoded, strict=True))


def lid_gain(face_model: ICTModel, neutral: np.ndarray, blinks: dict[str, np.ndarray]) -> np.ndarray:
    """(9409,) per template vertex: how much more the lids of `neutral` should move than `blinks` ({eyeBlink_L /
    _R: (9409, 3) displacement on `neutral`}) move them, for the blinks to close as ICT's close the template;
    1 away from the eyes."""
    names = list(face_model.expression_names)
    gain = np.ones(len(neutral))
    for blink, shape in blinks.items():
        wanted = lid_closure(face_model, face_model.face_neutral, face_model.face_expression_basis[names.index(blink)],
                             blink)
        got = lid_closure(face_model, neutral, shape, blink)
        scale = float(np.clip((1 - wanted) / max(1 - got, 1e-6), 1.0, LID_GAIN_MAX))
        motion = np.linalg.norm(shape, axis=1)
        upper, lower = (face_model.landmarks68[list(points)] for points in EYES[blink])
        margin = motion[upper].mean()  # the upper lid's travel
        # around this eye only: a decoded blink moves the rest of the face a little too
        centre = neutral[np.r_[upper, lower]].mean(0)
        near = np.clip((LID_REACH_CM[1] - np.linalg.norm(neutral - centre, axis=1)) / np.subtract(*LID_REACH_CM[::-1]),
                       0.0, 1.0)
        gain += (scale - 1.0) * np.clip(motion / max(margin, 1e-9), 0.0, 1.0) * near
    return gain


def _consistent_choice(face_model, triangles, candidate_vertices, bary, distance, choice, rounds: int = 2):
    """Where the lips (or lids) touch, the closest surface can be the wrong lip for a vertex or two, which
    then tears away when the mouth opens. A probe deformation (ICT's jawOpen and eyeBlink shapes) shows such
    vertices: their probe motion differs from their neighbours'. They take the candidate, nearly as close,
    that moves with the neighbours."""
    names = list(face_model.expression_names)
    probe = np.concatenate([face_model.face_expression_basis[names.index(n)]
                            for n in ("jawOpen", "eyeBlink_L", "eyeBlink_R")], axis=1)  # (9409, 9)
    motion = np.einsum("vkc,vkcd->vkd", bary, probe[candidate_vertices])  # (V, k, 9) per candidate
    edges = triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = len(choice)
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    degree = np.asarray(adjacency.sum(1)).ravel().clip(1)
    rows = np.arange(n)
    for _ in range(rounds):
        picked = motion[rows, choice]
        around = (adjacency @ picked) / degree[:, None]
        odd = np.linalg.norm(picked - around, axis=1) > CONSISTENCY_CM
        if not odd.any():
            break
        nearly = distance[odd] <= distance[odd, choice[odd]][:, None] + 0.2
        mismatch = np.linalg.norm(motion[odd] - around[odd][:, None], axis=2)
        choice[odd] = np.argmin(np.where(nearly, mismatch, np.inf), axis=1)
    return choice


def _still_components(triangles: np.ndarray, n_vertices: int, distance: np.ndarray) -> np.ndarray:
    """Vertices of separate parts lying away from the face surface (eyeballs behind the lids, teeth) stay
    still; parts on the skin (brow, lash or beard cards) move. The part holding most of the face (most
    vertices on it) always moves."""
    edges = triangles[:, [0, 1, 1, 2]].reshape(-1, 2)
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    count, labels = sp.csgraph.connected_components(graph, directed=False)
    if count == 1:
        return np.zeros(n_vertices, bool)
    on_face = np.bincount(labels, weights=(distance < FALLOFF_CM[0]).astype(float), minlength=count)
    order = np.lexsort((distance, labels))  # by part, then by distance: each part's median is its middle
    sizes = np.bincount(labels, minlength=count)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    still = distance[order[starts + (sizes - 1) // 2]] > COMPONENT_STILL_CM
    still[np.argmax(on_face)] = False
    return still[labels]


__all__ = ["NoFaceFoundError", "LandmarkError", "Registration", "fit_target"]
