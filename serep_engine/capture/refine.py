"""Codes refined against mediapipe's landmarks: analysis by synthesis with the capture network's code as the prior.

The network reads the face crop well for timing but under-reads real faces (on real clips a quarter to a third of
the motion, winks at 3% of their asymmetry: `serep eval real`), while mediapipe's 478 points follow lids and lips
on real faces. So each frame's code z is fitted to the points, with the network's code z_net as its prior:

    points_f (moved onto the template by a similarity) ~ N + I beta + B z_f
    minimise  sum_f |W (points_f - N - I beta - B z_f)|^2 / sigma^2 + |z_f - z_net_f|^2 / tau^2 + |beta|^2

N, B: the neutral and the code's displacement basis at the template vertices mediapipe's points sit on
(track/correspondence.py); I beta: ICT's identity modes at those vertices, for the actor's own shape and
mediapipe's own bias on it, shared by every frame of a clip (a photo gets its own). W weighs mediapipe's depth
less than its image-plane coordinates, and the eyelid points keep the network's depth (+ depth_prior
|B_z,lids (z_f - z_net_f)|^2): the image-plane points of a closed lid can also be met by lid vertices sunk behind the
eyeball, which then shows through (so it went on real winks, by 2.7 mm on every frame of liveportrait_d3, with
the benchmark's 2D measures blind to it). The similarity, beta and the codes are solved in turn; each step is a
small linear solve, so a clip costs milliseconds a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serep_engine.facemodel.ict import ICTModel

# mediapipe points on the forehead, nose bridge and face outline: the similarity is fitted on them
# mediapipe's eyelid contours (its FACEMESH_LEFT_EYE and RIGHT_EYE): few points that carry blinks and winks
EYE_POINTS = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246, 249, 263, 362, 373, 374,
              380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
RIGID_POINTS = (1, 4, 5, 6, 10, 21, 54, 93, 103, 127, 132, 151, 168, 195, 197, 234, 251, 284, 323, 332, 356, 361, 454)


@dataclass(frozen=True)
class RefineSettings:
    """Chosen by a small sweep on `serep eval real` (photos and clips; eye weight 1-16, identity modes 5-100, depth
    weight 0-0.5, tau 0.2-3): more identity modes let a photo's eye and brow shape pass as identity."""

    sigma_cm: float = 0.05  # how far mediapipe's points are trusted (per coordinate)
    tau: float = 1.0  # how far a code may move from the network's
    depth_weight: float = 0.3  # mediapipe's depth, relative to its image-plane coordinates
    eye_weight: float = 6.0  # the eyelid points, relative to the others
    identity_modes: int = 5  # ICT's first identity modes fitted (0: the template's own shape)
    iterations: int = 3
    depth_prior: float = 10.0  # the eyelid points' pull to the network's depth (10: lids sink 0.2 mm, not 2.7)


class LandmarkRefiner:
    """`refine(landmarks, codes, found)` for one identity's code basis (the template's, or a known subject's)."""

    def __init__(self, face_model: ICTModel, code_basis: np.ndarray, neutral: np.ndarray | None = None,
                 settings: RefineSettings | None = None):
        from serep_engine.track.correspondence import mediapipe_to_template
        from serep_engine.track.tracking import IRIS_LANDMARKS

        self.settings = s = settings or RefineSettings()
        vertex, valid = mediapipe_to_template(face_model, open_mouth=True)
        valid = valid.copy()
        valid[list(IRIS_LANDMARKS)] = False
        self.points = np.flatnonzero(valid)
        vertices = vertex[self.points]
        neutral = face_model.face_neutral if neutral is None else neutral
        self.neutral = neutral[vertices].astype(np.float64)  # (L, 3)
        self.code_basis = code_basis[:, vertices].reshape(len(code_basis), -1).astype(np.float64).T  # (3L, D)
        identity = face_model.identity_basis[:s.identity_modes, vertices]
        self.identity_basis = identity.reshape(len(identity), 3 * len(vertices)).astype(np.float64).T  # (3L, K)
        self.rigid = np.flatnonzero(np.isin(self.points, RIGID_POINTS))
        point_weight = np.where(np.isin(self.points, EYE_POINTS), s.eye_weight, 1.0)
        self.eye_depth_rows = 3 * np.flatnonzero(np.isin(self.points, EYE_POINTS)) + 2
        self.weights = (point_weight[:, None] * [1.0, 1.0, s.depth_weight]).reshape(-1)  # per coordinate, flat (3L,)

    def refine(self, landmarks: np.ndarray, codes: np.ndarray, found: np.ndarray | None = None,
               shared_identity: bool = True, identity: np.ndarray | None = None) -> np.ndarray:
        """landmarks (F, 478, 3) in image pixels (x right, y down, mediapipe's depth), codes (F, D) the network's,
        found (F,) -> refined codes (F, D); frames without a face keep their codes. `shared_identity`: one beta for
        all frames (a clip of one actor), else one per frame (unrelated photos); `identity`: a beta already known
        (`identity` of an earlier part of the clip), kept as it is."""
        codes = np.asarray(codes, np.float64).copy()
        found = self._usable(landmarks, codes, found)
        if found.any():
            codes[found] = self._fit(landmarks[found], codes[found], shared_identity, identity)[0]
        return codes.astype(np.float32)

    def identity(self, landmarks: np.ndarray, codes: np.ndarray, found: np.ndarray | None = None) -> np.ndarray | None:
        """(K,) the beta `refine` shares over these frames (None without a usable frame)."""
        codes = np.asarray(codes, np.float64)
        found = self._usable(landmarks, codes, found)
        return self._fit(landmarks[found], codes[found], True, None)[1][0] if found.any() else None

    @staticmethod
    def _usable(landmarks: np.ndarray, codes: np.ndarray, found: np.ndarray | None) -> np.ndarray:
        found = np.isfinite(landmarks).all((1, 2)) if found is None else np.asarray(found, bool).copy()
        return found & np.isfinite(codes).all(1)

    def _fit(self, landmarks: np.ndarray, prior: np.ndarray, shared_identity: bool,
             identity: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Codes (F, D) and betas (F, K) of frames that all have a face."""
        s = self.settings
        observed = landmarks[:, self.points].astype(np.float64) * [1.0, -1.0, -1.0]  # y up, toward the viewer
        z = prior.copy()
        beta = np.zeros((len(z), self.identity_basis.shape[1]))
        if identity is not None:
            beta[:] = identity
        w, lam = self.weights, (s.sigma_cm / s.tau) ** 2
        bw = self.code_basis * w[:, None]
        code_system = self.code_basis.T @ bw + lam * np.eye(len(bw.T))
        eye_depth = self.code_basis[self.eye_depth_rows]
        depth_system = s.depth_prior * eye_depth.T @ eye_depth
        code_system = code_system + depth_system
        iw = self.identity_basis * w[:, None]
        frames = len(z) if shared_identity else 1
        identity_system = frames * self.identity_basis.T @ iw + s.sigma_cm ** 2 * np.eye(len(iw.T))
        for _ in range(s.iterations):
            model = self.neutral.reshape(-1) + beta @ self.identity_basis.T + z @ self.code_basis.T  # (F, 3L)
            aligned = align(observed, model.reshape(len(z), -1, 3), self.rigid).reshape(len(z), -1)
            if identity is None:
                residual = aligned - self.neutral.reshape(-1) - z @ self.code_basis.T  # what identity must explain
                if shared_identity:
                    beta[:] = np.linalg.solve(identity_system, iw.T @ residual.sum(0))
                else:
                    beta = np.linalg.solve(identity_system, iw.T @ residual.T).T
            target = aligned - self.neutral.reshape(-1) - beta @ self.identity_basis.T
            z = np.linalg.solve(code_system, bw.T @ target.T + lam * prior.T + depth_system @ prior.T).T
        return z, beta


def align(points: np.ndarray, targets: np.ndarray, rigid: np.ndarray) -> np.ndarray:
    """(F, L, 3) points each moved by the similarity that best puts their `rigid` points on the targets'."""
    a, b = points[:, rigid], targets[:, rigid]
    ca, cb = a.mean(1, keepdims=True), b.mean(1, keepdims=True)
    u, sv, vt = np.linalg.svd(np.swapaxes(a - ca, 1, 2) @ (b - cb))
    flip = np.ones((len(points), 3))
    flip[:, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ (flip[:, :, None] * vt)
    scale = (sv * flip).sum(1) / ((a - ca) ** 2).sum((1, 2))
    return (points - ca) @ rotation * scale[:, None, None] + cb
