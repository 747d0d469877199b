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
from serep_engine.track.tracking import checked_pairing, mediapipe_mirror  # noqa: F401 (one of the maps)

def vertex_mirror(face_model: ICTModel) -> np.ndarray:
    """(V,) the face template vertex on the other side of each vertex."""
    from scipy.spatial import cKDTree  # the maps are built in training only; inference needs mirror_points

    neutral = face_model.face_neutral
    return cKDTree(neutral).query(neutral * [-1.0, 1.0, 1.0])[1]


def ibug68_mirror(face_model: ICTModel) -> np.ndarray:
    """(68,) the mirror partner of each iBUG landmark."""
    from scipy.spatial import cKDTree

    points = face_model.face_neutral[face_model.landmarks68]
    return checked_pairing(cKDTree(points).query(points * [-1.0, 1.0, 1.0])[1], "iBUG 68")


def code_mirror(expression_model, face_model: ICTModel) -> np.ndarray:
    """(D, D) M with mirrored_code = code @ M."""
    import torch

    flip = vertex_mirror(face_model)
    with torch.no_grad():
        basis = expression_model.identity_basis(face_model.face_neutral)
        mirrored = basis[:, flip] * torch.tensor([-1.0, 1.0, 1.0], dtype=basis.dtype)
        return expression_model.encode_displacements(mirrored, basis).numpy().astype(np.float32)


def mirror_points(points, partner, crop_size: float):
    """(B, N, 2) torch points in [-1, 1] crop units (pixel p at p / (S/2) - 1) -> those of the flipped crop, with
    each point taking its partner's place. No in-place writes: the ONNX export traces this."""
    import torch

    flipped = points[:, partner]
    return torch.stack([-flipped[..., 0] - 2.0 / crop_size, flipped[..., 1]], -1)
