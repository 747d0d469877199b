"""Left-right mirroring of the capture model's inputs and outputs.

A mirrored face is another valid face, so training shows each sample either way round (twice the data the
renderer made) and `CaptureModel.predict` averages a frame with its mirror image. Mirroring a sample:
- the crop flips horizontally (the crop is centred on the face, so the face stays in place);
- mediapipe's 478 landmarks and the 68 iBUG landmarks swap with their mirror partners, found on the
  template, which is exactly symmetric: the 68 by their vertices, mediapipe's by tracking a frontal render;
- the code maps through the code space's mirror: each code unit's displacement on the template, mirrored
  (x -> -x, each vertex <-> its partner) and encoded back. The code space is not exactly closed under
  mirroring, so this is the nearest code of the mirrored expression, not an exact swap.
"""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import ICTModel

RENDER_SIZE = 512


def vertex_mirror(face_model: ICTModel) -> np.ndarray:
    """(V,) the face template vertex on the other side of each vertex."""
    from scipy.spatial import cKDTree  # the maps are built in training only; inference needs mirror_points

    neutral = face_model.face_neutral
    return cKDTree(neutral).query(neutral * [-1.0, 1.0, 1.0])[1]


def ibug68_mirror(face_model: ICTModel) -> np.ndarray:
    """(68,) the mirror partner of each iBUG landmark."""
    from scipy.spatial import cKDTree

    points = face_model.face_neutral[face_model.landmarks68]
    return _checked(cKDTree(points).query(points * [-1.0, 1.0, 1.0])[1], "iBUG 68")


def mediapipe_mirror(face_model: ICTModel) -> np.ndarray:
    """(478,) the mirror partner of each mediapipe landmark: the template rendered head-on is symmetric about
    the image's centre column, so each landmark is paired with the landmark nearest its reflection."""
    from scipy.optimize import linear_sum_assignment

    from serep_engine.render.head import Appearance, Camera, HeadRenderer
    from serep_engine.track.tracking import FaceTracker

    renderer = HeadRenderer(face_model, RENDER_SIZE)
    image, mask = renderer.render(face_model.neutral, Camera(RENDER_SIZE, focal=1800.0, distance=90.0), Appearance())
    with FaceTracker(video=False, max_faces=1) as tracker:
        observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
    if not observation.found:
        raise RuntimeError("mediapipe found no face on the rendered template")
    points = observation.landmarks[:, :2]
    reflected = points * [-1.0, 1.0] + [RENDER_SIZE - 1.0, 0.0]
    _, partner = linear_sum_assignment(np.linalg.norm(reflected[:, None] - points[None], axis=2))
    return _checked(partner, "mediapipe")


def code_mirror(expression_model, face_model: ICTModel) -> np.ndarray:
    """(D, D) M with mirrored_code = code @ M."""
    import torch

    flip = vertex_mirror(face_model)
    with torch.no_grad():
        basis = expression_model.identity_basis(face_model.face_neutral)
        mirrored = basis[:, flip] * torch.tensor([-1.0, 1.0, 1.0], dtype=basis.dtype)
        return expression_model.encode_displacements(mirrored, basis).numpy().astype(np.float32)


def _checked(partner: np.ndarray, what: str) -> np.ndarray:
    if not np.array_equal(partner[partner], np.arange(len(partner))):
        raise RuntimeError(f"the {what} landmark mirror is not a pairing")
    return partner.astype(np.int64)


def mirror_points(points, partner, crop_size: float):
    """(B, N, 2) torch points in [-1, 1] crop units (pixel p at p / (S/2) - 1) -> those of the flipped crop, with
    each point taking its partner's place. No in-place writes: the ONNX export traces this."""
    import torch

    flipped = points[:, partner]
    return torch.stack([-flipped[..., 0] - 2.0 / crop_size, flipped[..., 1]], -1)
