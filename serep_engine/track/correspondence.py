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

    renderer = HeadRenderer(face_model, 512)
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
                points.append(camera.unproject(observation.landmarks[:, :2], renderer.depth()))
    if not points:
        raise RuntimeError("mediapipe found no face on the rendered template")
    surface = np.nanmedian(np.stack(points), axis=0)
    distance, vertex = cKDTree(head[:len(face_model.face_neutral)]).query(np.nan_to_num(surface, nan=1e6))
    valid = np.isfinite(surface).all(1) & (distance < MAX_SURFACE_DISTANCE_CM)
    np.savez(path, vertex=vertex.astype(np.int64), valid=valid)
    return vertex.astype(np.int64), valid


def mediapipe_mirror(face_model: ICTModel, render_size: int = 512) -> np.ndarray:
    """(478,) the mirror partner of each mediapipe landmark (the same points on a face seen in a mirror): the
    template rendered head-on is symmetric about the image's centre column, so each landmark is paired with the
    landmark nearest its reflection. Cached on disk (it depends only on mediapipe's version)."""
    from importlib.metadata import version

    from serep_engine.cache import cached_array

    return cached_array(cache_dir() / f"mediapipe{version('mediapipe')}_mirror.npy",
                        lambda: _mirror_pairing(face_model, render_size)).astype(np.int64)


def _mirror_pairing(face_model: ICTModel, render_size: int) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    from serep_engine.render.head import Appearance, Camera, HeadRenderer
    from serep_engine.track.tracking import FaceTracker

    renderer = HeadRenderer(face_model, render_size)
    image, mask = renderer.render(face_model.neutral, Camera(render_size, focal=1800.0, distance=90.0), Appearance())
    with FaceTracker(video=False, max_faces=1) as tracker:
        observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
    if not observation.found:
        raise RuntimeError("mediapipe found no face on the rendered template")
    points = observation.landmarks[:, :2]
    reflected = points * [-1.0, 1.0] + [render_size - 1.0, 0.0]
    _, partner = linear_sum_assignment(np.linalg.norm(reflected[:, None] - points[None], axis=2))
    return checked_pairing(partner, "mediapipe")


def checked_pairing(partner: np.ndarray, what: str) -> np.ndarray:
    if not np.array_equal(partner[partner], np.arange(len(partner))):
        raise RuntimeError(f"the {what} landmark mirror is not a pairing")
    return partner.astype(np.int64)
