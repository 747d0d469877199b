"""Which template vertex each of mediapipe's 478 landmarks sits on, found by looking: the neutral head
is rendered from a few views, mediapipe runs on the renders, and each landmark is lifted to the surface
through the depth buffer. The median surface point over the views picks the nearest template vertex.
With `open_mouth` the template is rendered and lifted with its jaw open: on the closed neutral mouth the upper and
lower inner-lip points sit on one line and half of them land on the other lip's vertices, so a fit to them cannot
open the mouth. Cached on disk (it depends only on the ICT model and mediapipe's version)."""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import cache_dir

VIEW_YAWS = (-20.0, 0.0, 20.0)
MAX_SURFACE_DISTANCE_CM = 0.5
OPEN_MOUTH = {"jawOpen": 0.4}
# mediapipe's lip contours (its FACEMESH_LIPS): the points `open_mouth` takes from the open-mouth render
LIP_POINTS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269,
              270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)


def mediapipe_to_template(face_model: ICTModel, open_mouth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(478,) template vertex per mediapipe landmark and (478,) whether it lies on the template's face; with
    `open_mouth`, the lip points from the open-mouth render."""
    if open_mouth:
        vertex, valid = _lifted(face_model, OPEN_MOUTH)
        closed_vertex, closed_valid = _lifted(face_model, {})
        lips = np.isin(np.arange(len(vertex)), LIP_POINTS)
        return np.where(lips, vertex, closed_vertex), np.where(lips, valid, closed_valid)
    return _lifted(face_model, {})


def mediapipe_by_distance_to_68(face_model: ICTModel) -> np.ndarray:
    """(68, 468) mediapipe's face points (no irises) ordered by their distance on the template to each iBUG point
    (a tie, two points on one vertex: the lower index first)."""
    vertex, valid = mediapipe_to_template(face_model)
    valid = valid.copy()
    valid[468:] = False
    candidates = np.flatnonzero(valid)
    neutral = face_model.neutral
    distances = np.linalg.norm(neutral[vertex[candidates]][None] - neutral[face_model.landmarks68][:, None], axis=2)
    return candidates[np.argsort(distances, axis=1, kind="stable")]


def _lifted(face_model: ICTModel, expression: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """mediapipe's points on renders of the template with `expression` (ICT weights), lifted to its vertices."""
    from importlib.metadata import version

    from serep_engine.facemodel.expressions import INDEX

    suffix = "_open_mouth" if expression else ""
    path = cache_dir() / f"mediapipe{version('mediapipe')}_to_ict_face{suffix}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as cached:
            return cached["vertex"], cached["valid"]
    from scipy.spatial import cKDTree

    from serep_engine.render.head import Appearance, Camera, HeadRenderer
    from serep_engine.track.tracking import FaceTracker

    renderer = HeadRenderer(face_model, 512, painted=False)  # the correspondence in use was measured unpainted
    head = face_model.neutral.copy()
    for name, weight in expression.items():
        head += weight * face_model.expression_basis[INDEX[name]]
    points = []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for yaw in VIEW_YAWS:
            camera = Camera(512, focal=1800.0, distance=90.0, yaw=yaw)
            image, mask = renderer.render(head, camera, Appearance())
            observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
            if observation.found:
                lifted = camera.unproject(observation.landmarks[:, :2], renderer.depth())
                points.append(_lips_onto_lips(lifted, observation.landmarks[:, :2], head[:len(face_model.face_neutral)],
                                              camera, renderer.depth()))
    if not points:
        raise RuntimeError("mediapipe found no face on the rendered template")
    surface = np.nanmedian(np.stack(points), axis=0)
    distance, vertex = cKDTree(head[:len(face_model.face_neutral)]).query(np.nan_to_num(surface, nan=1e6))
    valid = np.isfinite(surface).all(1) & (distance < MAX_SURFACE_DISTANCE_CM)
    np.savez(path, vertex=vertex.astype(np.int64), valid=valid)
    return vertex.astype(np.int64), valid


def _lips_onto_lips(lifted: np.ndarray, pixels: np.ndarray, face: np.ndarray, camera, depth: np.ndarray) -> np.ndarray:
    """Lip points that the depth buffer lifted off the face take the face vertex drawn nearest to them instead: on an
    open mouth the Tasks landmarker puts the lower inner lip a few pixels into the mouth, where the depth is the
    mouth's inside, 1-3 cm behind the lip."""
    from scipy.spatial import cKDTree

    drawn, distance = camera.project(face)
    ij = np.clip(drawn.round().astype(int), 0, len(depth) - 1)
    visible = np.flatnonzero(distance <= depth[ij[:, 1], ij[:, 0]] + 0.2)
    off = np.array([i for i in LIP_POINTS if not cKDTree(face).query(np.nan_to_num(lifted[i], nan=1e6))[0]
                    < MAX_SURFACE_DISTANCE_CM], int)
    if len(off):
        lifted = lifted.copy()
        lifted[off] = face[visible[cKDTree(drawn[visible]).query(pixels[off])[1]]]
    return lifted
