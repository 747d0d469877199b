"""Finding the face on a user mesh without help: render it from a few directions, run the tracking front end
(mediapipe) on the renders, lift the landmarks to the surface through the depth buffer, and estimate the
similarity transform to the template from the template vertices those landmarks sit on.

The mesh's orientation is unknown, so the search turns it through 26 view directions x 4 in-plane rolls
(commonest conventions first: +Z forward / +Y up as in OBJ and ICT, -Y forward / +Z up as in Blender) and
keeps the view whose similarity puts the template face closest to the mesh's surface (stopping early at a
close one). Then it renders the face from the front and from +-25 degrees and takes each landmark's median
surface point over those views.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from serep_engine.facemodel.ict import ICTModel
from serep_engine.facemodel.regions import NARROW_FACE_VERTEX_COUNT

REFINE_YAWS = (-25.0, 0.0, 25.0)
MIN_POINTS = 150  # lifted landmarks needed to trust a view
MAX_RESIDUAL_CM = 2.0  # trimmed RMS of the landmarks' similarity fit beyond which a view's "face" is noise
# Mediapipe also "finds" faces in upside-down or side views, with plausible landmark residuals. What tells
# them apart is the surface: the template placed by a right hypothesis lies on the mesh (median distance of
# its face 0.15-0.35 cm on held-out heads, stylised ones included) and a wrong one does not (0.4 cm and up).
ACCEPT_AT_ONCE_CM = 0.2
MAX_SURFACE_CM = 0.6


class NoFaceFoundError(ValueError):
    """No face could be found on the mesh (artist-readable message)."""


@dataclass
class Similarity:
    """x_template = scale * x_user @ rotation.T + translation (template cm, ICT orientation)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def to_template(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def to_user(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) - self.translation) @ self.rotation / self.scale


def umeyama(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> Similarity:
    """Least-squares similarity taking source points (N, 3) onto target points (N, 3)."""
    weights = np.ones(len(source)) if weights is None else np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    mu_s, mu_t = weights @ source, weights @ target
    s, t = source - mu_s, target - mu_t
    cross = (t * weights[:, None]).T @ s
    u, sigma, vt = np.linalg.svd(cross)
    sign = np.ones(3)
    sign[2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag(sign) @ vt
    variance = weights @ (s**2).sum(1)
    scale = float((sigma * sign).sum() / max(variance, 1e-300))
    return Similarity(scale, rotation, mu_t - scale * mu_s @ rotation.T)


def robust_similarity(user: np.ndarray, template: np.ndarray, keep: float = 0.8, rounds: int = 4):
    """Similarity user -> template, refitted on the best `keep` fraction of pairs; returns it and the
    trimmed RMS residual (template cm)."""
    use = np.ones(len(user), bool)
    for _ in range(rounds):
        similarity = umeyama(user[use], template[use])
        residual = np.linalg.norm(similarity.to_template(user) - template, axis=1)
        use = residual <= np.quantile(residual, keep)
    return similarity, float(np.sqrt(np.mean(residual[use] ** 2)))


def _view_rotations():
    """Rotations of the user frame that put each candidate "front" direction towards the camera (+Z) with
    each of four perpendicular "up" directions along +Y."""
    axes = np.eye(3)
    directions = [axes[2], -axes[1], axes[1], -axes[2], axes[0], -axes[0]]
    directions += [np.array(c, float) / np.sqrt(3) for c in itertools.product((1, -1), repeat=3)]
    directions += [np.array(c, float) / np.sqrt(2) for c in itertools.product((1, -1, 0), repeat=3)
                   if sum(abs(x) for x in c) == 2]
    for front in directions:
        candidates = [axes[1], axes[2], -axes[1], -axes[2], axes[0], -axes[0]]
        ups = []
        for up in candidates:
            up = up - front * (up @ front)
            if np.linalg.norm(up) > 0.5 and all(abs(up @ u) < 0.99 * np.linalg.norm(up) for u in ups):
                ups.append(up / np.linalg.norm(up))
        ups = ups[:1] + [np.cross(front, ups[0]), -ups[0], -np.cross(front, ups[0])]
        for up in ups:
            yield np.stack([np.cross(up, front), up, front])  # rows: where user axes go -> render x, y, z


def _yaw(degrees: float) -> np.ndarray:
    y = np.radians(degrees)
    return np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])


@dataclass
class FoundLandmarks:
    template_vertices: np.ndarray  # (N,) template vertex each landmark sits on
    user_points: np.ndarray  # (N, 3) its surface point on the user mesh (user frame)
    similarity: Similarity
    residual_cm: float  # trimmed RMS of the landmarks against the generic template
    surface_cm: float  # median distance of the similarity-placed template face from the mesh
    views_tried: int


def find_landmarks(face_model: ICTModel, vertices: np.ndarray, triangles: np.ndarray, size: int = 384,
                   image_callback=None) -> FoundLandmarks:
    """Automatic landmarks on a user mesh; raises NoFaceFoundError when no view shows a face."""
    from serep_engine.render.mesh import MeshRenderer
    from serep_engine.track.correspondence import mediapipe_to_template
    from serep_engine.track.tracking import FaceTracker

    mp_vertex, mp_valid = mediapipe_to_template(face_model)
    template_points = face_model.neutral[mp_vertex]
    narrow_face = face_model.face_neutral[:NARROW_FACE_VERTEX_COUNT]
    tree = cKDTree(vertices)
    renderer = MeshRenderer(vertices, triangles, size)
    tried = 0

    def look(tracker, rotation):
        image = renderer.render(rotation)
        observation = tracker.track(image)
        if not observation.found:
            return None
        if image_callback is not None:
            image_callback(image, observation.landmarks)
        return renderer.lift(observation.landmarks[:, :2], rotation)

    def hypothesis(points):
        """(surface score, similarity, residual) of one view's landmarks, or None."""
        use = mp_valid & np.isfinite(points).all(1)
        if use.sum() < MIN_POINTS:
            return None
        similarity, residual = robust_similarity(points[use], template_points[use])
        if residual > MAX_RESIDUAL_CM:
            return None
        distance = tree.query(similarity.to_user(narrow_face), workers=-1)[0] * similarity.scale
        return float(np.median(distance)), similarity, residual

    try:
        with FaceTracker(video=False, max_faces=1) as tracker:
            best = None
            for rotation in _view_rotations():
                tried += 1
                points = look(tracker, rotation)
                found = None if points is None else hypothesis(points)
                if found is not None and (best is None or found[0] < best[0][0]):
                    best = (found, points)
                if best is not None and best[0][0] < ACCEPT_AT_ONCE_CM:
                    break
            if best is None or best[0][0] > MAX_SURFACE_CM:
                raise NoFaceFoundError(
                    f"no face found on the mesh (looked from {tried} directions): make sure it is a head with a "
                    "visible face, or give its landmarks (68 vertex indices in the iBUG order)")
            (score, similarity, residual), points = best
            # The face from the front and from the sides: each landmark's median surface point, kept when it
            # fits the surface at least as well as the search view's.
            refined = [p for yaw in REFINE_YAWS if (p := look(tracker, _yaw(yaw) @ similarity.rotation)) is not None]
            if refined:
                with warnings.catch_warnings():  # landmarks seen in no view stay NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    median = np.nanmedian(np.stack(refined), axis=0)
                found = hypothesis(median)
                if found is not None and found[0] <= score:
                    (score, similarity, residual), points = found, median
    finally:
        renderer.release()
    use = mp_valid & np.isfinite(points).all(1)
    return FoundLandmarks(mp_vertex[use], points[use], similarity, residual, score, tried)
