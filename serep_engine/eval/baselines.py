"""Baseline capture methods for SynthREX, runnable by name.

- `neutral`: the zero expression (every frame is the subject's neutral).
- `serep`: the capture as the product runs it (see `SerepMethod`): the network's codes refined against mediapipe's
  landmarks (capture/refine.py).
- `serep_network`: the capture network alone (the `follow_landmarks` option off).
- `landmark_fit`: the classic 3DMM approach. Per frame, mediapipe's landmarks (the tracking front end)
  are fitted by regularised, bounded least squares with ICT's linear expression shapes on the subject's
  neutral, under a scaled-orthographic camera; pose and expression are solved in turn.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear

from serep_engine.facemodel.ict import ICTModel
from serep_engine.track.tracking import IRIS_LANDMARKS


def neutral_method(face_model: ICTModel):
    def run(frames: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        return np.repeat(neutral[None], len(frames), axis=0)

    return run


def _scaled_orthographic(points3d: np.ndarray, points2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares s*R[:2] (2x3, rows orthogonal with equal norm) and translation (2,)."""
    centred3, centred2 = points3d - points3d.mean(0), points2d - points2d.mean(0)
    affine = np.linalg.lstsq(centred3, centred2, rcond=None)[0].T  # (2, 3)
    u, s, vt = np.linalg.svd(affine, full_matrices=False)
    projection = s.mean() * (u @ vt)
    return projection, points2d.mean(0) - projection @ points3d.mean(0)


def landmark_fit_method(face_model: ICTModel, regularisation: float = 0.2, iterations: int = 4):
    from serep_engine.track.correspondence import mediapipe_to_template
    from serep_engine.track.tracking import FaceTracker

    vertex, valid = mediapipe_to_template(face_model)
    valid = valid.copy()
    valid[list(IRIS_LANDMARKS)] = False
    used, vertices = np.flatnonzero(valid), vertex[valid]
    shapes = face_model.face_expression_basis[:, vertices]  # (53, L, 3)
    all_shapes = face_model.face_expression_basis

    def fit(landmarks2d: np.ndarray, neutral_points: np.ndarray) -> np.ndarray:
        weights = np.zeros(len(shapes))
        for _ in range(iterations):
            current = neutral_points + np.tensordot(weights, shapes, axes=1)
            projection, translation = _scaled_orthographic(current, landmarks2d)
            design = np.einsum("ij,klj->lik", projection, shapes).reshape(-1, len(shapes))  # (2L, 53)
            residual = (landmarks2d - neutral_points @ projection.T - translation).reshape(-1)
            scale = np.linalg.norm(projection[0])
            damping = np.sqrt(regularisation * len(landmarks2d)) * scale
            system = np.vstack([design, damping * np.eye(len(shapes))])
            target = np.concatenate([residual, np.zeros(len(shapes))])
            weights = lsq_linear(system, target, bounds=(0.0, 1.0), method="bvls").x
        return weights

    def run(frames: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        out = np.repeat(neutral[None], len(frames), axis=0)
        with FaceTracker(video=True, max_faces=1) as tracker:
            for f, frame in enumerate(frames):
                observation = tracker.track(frame)
                if observation.found:
                    weights = fit(observation.landmarks[used, :2].astype(np.float64), neutral[vertices])
                    out[f] += np.tensordot(weights, all_shapes, axes=1)
        return out

    return run


class SerepMethod:
    """The SEREP capture as the product runs it: `serep_codes` (below), then gap filling and smoothing, then D_mesh
    decodes the codes onto the subject's neutral. `keys` also gives its ARKit keys as the product solves them (with
    the network's codes and the tracker's scores as second readings of some keys: retarget/arkit.py, fused_keys)."""

    def __init__(self, face_model: ICTModel, capture_model=None, smoothing: float = 1.0, mirror_average: bool = True,
                 follow_landmarks: bool = True):
        self.codes_of = serep_codes(face_model, capture_model, mirror_average, follow_landmarks)
        self.smoothing = smoothing
        self.follow_landmarks = follow_landmarks

    def __call__(self, frames: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        captured = self.codes_of(frames, neutral)
        return self._decoded(captured["codes"], captured["found"], captured["basis"], neutral)

    def keys(self, frames: np.ndarray, neutral: np.ndarray, solver) -> tuple[np.ndarray, np.ndarray]:
        """The meshes (F, V, 3) and their ARKit keys (F, 52) by `solver` (retarget/arkit.py: ARKitSolver)."""
        from serep_engine.retarget.arkit import fused_keys, tracker_keys

        captured = self.codes_of(frames, neutral)
        found, basis = captured["found"], captured["basis"]
        meshes = self._decoded(captured["codes"], found, basis, neutral)
        keys = solver.solve(meshes - neutral)
        if self.follow_landmarks:
            network = solver.solve(self._decoded(captured["network"], found, basis, neutral) - neutral)
            keys = fused_keys(keys, network, self._smoothed(tracker_keys(captured["scores"]), found),
                              self._smoothed(captured["yaw"][:, None], found)[:, 0])
        return meshes, keys

    def _smoothed(self, values: np.ndarray, found: np.ndarray) -> np.ndarray:
        """Gaps filled and smoothed as the product does (a 30 fps clip)."""
        from serep_engine.track.filters import fill_gaps, smooth_codes

        return smooth_codes(fill_gaps(values, found), 30.0, self.smoothing, found)

    def _decoded(self, codes: np.ndarray, found: np.ndarray, basis: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        return neutral[None] + np.tensordot(self._smoothed(codes, found), basis, axes=1)


def serep_codes(face_model: ICTModel, capture_model=None, mirror_average: bool = True, follow_landmarks: bool = True):
    """`codes_of(frames, neutral)` -> {"codes": the capture's per-frame codes before smoothing (F, D) (NaN without a
    face), "found" (F,), "basis": the code basis on `neutral`, "network": the network's own codes (F, D), "scores":
    the tracker's blendshape scores (F, 52), "yaw": the head's yaw by the tracker (F,) degrees}: the front end, the
    network's codes (each crop averaged with its mirror image unless `mirror_average` is off), refined against the
    landmarks on the subject's neutral (`follow_landmarks`), a clip's with the actor's rest taken off
    (`refined_codes`)."""
    import torch

    from serep_engine.capture.model import CaptureModel
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.retarget.arkit import head_yaw

    capture_model = capture_model or CaptureModel.from_pretrained("auto")
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)

    def codes_of(frames: np.ndarray, neutral: np.ndarray) -> dict[str, np.ndarray]:
        tracked = network_codes(capture_model, frames, mirror_average)
        with torch.no_grad():
            basis = expression_model.identity_basis(neutral).numpy()
        codes = refined_codes(face_model, basis, neutral, tracked) if follow_landmarks else tracked["codes"]
        return {"codes": codes, "found": tracked["found"], "basis": basis, "network": tracked["codes"],
                "scores": tracked["scores"], "yaw": head_yaw(tracked["matrices"])}

    return codes_of


def network_codes(capture_model, frames: np.ndarray, mirror_average: bool = True) -> dict[str, np.ndarray]:
    """The front end over a clip's (or one photo's) RGB frames and the network's codes: {"codes" (F, D), NaN without a
    face, "found" (F,), "landmarks" (F, 478, 3) mediapipe's points, "scores" (F, 52) its blendshape scores,
    "matrices" (F, 4, 4) its facial transformation matrices}."""
    from serep_engine.track.frontend import LiveFrontEnd

    live = LiveFrontEnd(30.0, capture_model.crop_size)
    tracked = [live(frame) for frame in frames]
    live.close()
    codes = np.full((len(frames), capture_model.code_dim), np.nan, np.float32)
    hits = [t for t in tracked if t.found]
    for start in range(0, len(hits), 64):
        batch = hits[start:start + 64]
        predicted, _ = capture_model.predict([t.crop for t in batch], [t.crop_landmarks for t in batch],
                                             mirror_average=mirror_average)
        codes[[t.index for t in batch]] = predicted
    return {"codes": codes, "found": np.array([t.found for t in tracked]),
            "landmarks": np.stack([t.landmarks for t in tracked]),
            "scores": np.stack([t.observation.blendshapes for t in tracked]),
            "matrices": np.stack([t.observation.matrix for t in tracked])}


def refined_codes(face_model: ICTModel, basis: np.ndarray, neutral: np.ndarray, tracked: dict) -> np.ndarray:
    """`network_codes`' codes refined against its landmarks on `neutral` (code basis `basis`), a clip's with the
    actor's rest taken off (capture/refine.py: clip_rest; a photo has no calm frames to read a rest on)."""
    from serep_engine.capture.refine import LandmarkRefiner

    refiner = LandmarkRefiner(face_model, basis, neutral)
    landmarks, codes, found = tracked["landmarks"], tracked["codes"], tracked["found"]
    rest = refiner.clip_rest(landmarks, codes, tracked["scores"], found) if len(codes) > 1 else None
    return refiner.refine(landmarks, codes, found, rest=rest)


def serep_network_method(face_model: ICTModel, capture_model=None, mirror_average: bool = True):
    return SerepMethod(face_model, capture_model, mirror_average=mirror_average, follow_landmarks=False)


METHODS = {"neutral": neutral_method, "landmark_fit": landmark_fit_method, "serep": SerepMethod,
           "serep_network": serep_network_method}
