"""Which template vertex each of mediapipe's 478 landmarks sits on, found by looking: the neutral head
is rendered from a few views, mediapipe runs on the renders, and each landmark is lifted to the surface
through the depth buffer. The median surface point over the views picks the nearest template vertex.
Cached on disk (it depends only on the ICT model and mediapipe's version)."""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import cache_dir

VIEW_YAWS = (-20.0, 0.0, 20.0)
MAX_SURFACE_DISTANCE_CM = 0.5


def mediapipe_to_template(face_model: ICTModel) -> tuple[np.ndarray, np.ndarray]:
    """(478,) template vertex per mediapipe landmark and (478,) whether it lies on the template's face."""
    import mediapipe

    path = cache_dir() / f"mediapipe{mediapipe.__version__}_to_ict_face.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as cached:
            return cached["vertex"], cached["valid"]
    from scipy.spatial import cKDTree

    from serep_engine.render.head import Appearance, Camera, HeadRenderer
    from serep_engine.track.tracking import FaceTracker

    renderer = HeadRenderer(face_model, 512)
    points = []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for yaw in VIEW_YAWS:
            camera = Camera(512, focal=1800.0, distance=90.0, yaw=yaw)
            image, mask = renderer.render(face_model.neutral, camera, Appearance())
            observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
            if observation.found:
                points.append(camera.unproject(observation.landmarks[:, :2], renderer.depth()))
    if not points:
        raise RuntimeError("mediapipe found no face on the rendered template")
    surface = np.nanmedian(np.stack(points), axis=0)
    distance, vertex = cKDTree(face_model.face_neutral).query(np.nan_to_num(surface, nan=1e6))
    valid = np.isfinite(surface).all(1) & (distance < MAX_SURFACE_DISTANCE_CM)
    np.savez(path, vertex=vertex.astype(np.int64), valid=valid)
    return vertex.astype(np.int64), valid
