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
small linear solve, so a clip costs milliseconds a frame. The similarity counts each point by how little ICT's
expressions move it (`POSE_MOTION_CM`): fitted on a fixed set of forehead, nose-bridge and outline points, which
brows, sneers and the jaw move by up to 4 mm, it took part of every brow raise and frown for a nod of the head
(alex_rom_4's frown, frontal: the refined inner brows came down 0.7 mm, the truth's 5.3; with the weights 2.1).

A clip's refined codes also carry a constant the actor does not make: the part of their face shape (and of mediapipe's
bias on it) that five identity modes cannot take is read as expression on every frame (on the 23 real clips their
calmest tenth of frames decoded to browDownRight 0.66 and eyeBlinkRight 0.26 on ICT's ARKit shapes). `clip_rest`
reads the actor's rest on the clip's calm frames (`calm_frames`: mouth closed, eyes open), where the network's own
code is taken as the truth, in two parts: where the eyelid points sit beyond the network's rest (the actor's lids: a
shift of the points' place, each upper-lid point's going over to that of the lower-lid point below it as the eye
closes; a shift of the codes would leave a droopy-lidded actor's blinks part open and take a wide-eyed actor's past
shut), then the code the refined calm frames still differ from the network's by, taken off every frame. The motion
stays the refinement's, the rest becomes the network's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.track.tracking import BLENDSHAPE_NAMES

# mediapipe's eyelid contours (its FACEMESH_LEFT_EYE and RIGHT_EYE): few points that carry blinks and winks
EYE_POINTS = (7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246, 249, 263, 362, 373, 374,
              380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466)
# mediapipe's eyebrows (its FACEMESH_LEFT_EYEBROW and RIGHT_EYEBROW)
BROW_POINTS = (46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336)
# per eye (the actor's right, then left; EYE_POINTS): its upper-lid points, the lower-lid point below each, its corners,
# and the upper, lower and corner points its opening is measured on
UPPER_LIDS = ((246, 161, 160, 159, 158, 157, 173), (466, 388, 387, 386, 385, 384, 398))
LOWER_LIDS = ((7, 163, 144, 145, 153, 154, 155), (249, 390, 373, 374, 380, 381, 382))
EYE_CORNERS = ((33, 133), (362, 263))
EYE_OPENINGS = ((159, 145, 33, 133), (386, 374, 362, 263))
EYES = tuple(upper + lower + corners for upper, lower, corners in zip(UPPER_LIDS, LOWER_LIDS, EYE_CORNERS))
# the similarity trusts a point by how little ICT's expressions move it: weight 1 / (1 + (its largest motion over the
# 53 shapes / POSE_MOTION_CM)^2); the eyelids and brows not at all
POSE_MOTION_CM = 0.1
CALM_FRACTION = 0.1  # of a clip's faces: its rest is read on this many of its calmest frames (`calm_frames`)


@dataclass(frozen=True)
class ClipRest:
    """An actor's rest in one clip (`LandmarkRefiner.clip_rest`), shared by all its frames."""

    identity: np.ndarray  # (K,) beta: the face shape the identity modes take
    lids: np.ndarray  # (L, 3) where the eyelid points sit at rest beyond the network's rest (zero off the lids)
    lower_lids: np.ndarray  # (L, 3) the same on shut eyes: each upper-lid point takes that of the point below it
    openings: np.ndarray  # (2,) each eye's opening at rest (`eye_openings`)
    code: np.ndarray  # (D,) the constant the refined codes still carry at rest, taken off every frame


@dataclass(frozen=True)
class RefineSettings:
    """Chosen by a small sweep on `serep eval real` (photos and clips; eye weight 1-16, identity modes 5-100, depth
    weight 0-0.5, tau 0.2-3, brow weight 0.1-8): more identity modes let a photo's eye and brow shape pass as
    identity. Brow weight 4 against 1: photos' brow height 0.57 -> 0.64, clips' 0.91 / 0.94 -> 0.93 / 1.00, the
    takes' browInnerUp 0.35 -> 0.33 (mediapipe misreads our renders), the rest within 0.01."""

    sigma_cm: float = 0.05  # how far mediapipe's points are trusted (per coordinate)
    tau: float = 1.0  # how far a code may move from the network's
    depth_weight: float = 0.3  # mediapipe's depth, relative to its image-plane coordinates
    eye_weight: float = 6.0  # the eyelid points, relative to the others
    brow_weight: float = 4.0  # the eyebrow points, relative to the others
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
        motion = np.linalg.norm(face_model.face_expression_basis[:, vertices], axis=2).max(0)  # (L,) cm
        self.pose_weights = np.where(np.isin(self.points, EYE_POINTS + BROW_POINTS), 0.0,
                                     1.0 / (1.0 + (motion / POSE_MOTION_CM) ** 2))
        point_weight = np.select([np.isin(self.points, EYE_POINTS), np.isin(self.points, BROW_POINTS)],
                                 [s.eye_weight, s.brow_weight], 1.0)
        self.eye_depth_rows = 3 * np.flatnonzero(np.isin(self.points, EYE_POINTS)) + 2
        self.weights = (point_weight[:, None] * [1.0, 1.0, s.depth_weight]).reshape(-1)  # per coordinate, flat (3L,)
        row = {point: r for r, point in enumerate(self.points)}
        self.eye_rows = [np.array([row[p] for p in eye if p in row]) for eye in EYES]  # per eye, its points' rows
        pairs = [(row[u], row[b]) for uppers, lowers in zip(UPPER_LIDS, LOWER_LIDS) for u, b in zip(uppers, lowers)
                 if u in row and b in row]
        self.upper_rows, self.below_rows = (np.array(rows) for rows in zip(*pairs))  # upper-lid points, those below

    def refine(self, landmarks: np.ndarray, codes: np.ndarray, found: np.ndarray | None = None,
               shared_identity: bool = True, rest: ClipRest | None = None) -> np.ndarray:
        """landmarks (F, 478, 3) in image pixels (x right, y down, mediapipe's depth), codes (F, D) the network's,
        found (F,) -> refined codes (F, D); frames without a face keep their codes. `shared_identity`: one beta for
        all frames (a clip of one actor), else one per frame (unrelated photos); `rest`: the actor's rest
        (`clip_rest` of the clip or of an earlier part of it), whose face shape is kept and whose lids and constant
        code are taken off."""
        codes = np.asarray(codes, np.float64).copy()
        found = self._usable(landmarks, codes, found)
        if found.any():
            seen = landmarks[found]
            if rest is None:
                codes[found] = self._fit(seen, codes[found], shared_identity, None)[0]
            else:
                neutral = self._lids_at(rest, eye_openings(seen))
                codes[found] = self._fit(seen, codes[found], True, rest.identity, neutral)[0] - rest.code
        return codes.astype(np.float32)

    def clip_rest(self, landmarks: np.ndarray, codes: np.ndarray, blendshapes: np.ndarray,
                  found: np.ndarray | None = None) -> ClipRest | None:
        """The actor's rest over these frames of one clip (None without a usable frame): its calm frames
        (`calm_frames`, by the Face Landmarker's scores `blendshapes` (F, 52)) are the ones the network reads right."""
        codes = np.asarray(codes, np.float64)
        found = self._usable(landmarks, codes, found)
        if not found.any():
            return None
        seen, prior = landmarks[found], codes[found]
        openings = eye_openings(seen)
        calm = calm_frames(lip_gap(seen), expression_activity(blendshapes[found]), openings)
        _, beta = self._fit(seen, prior, True, None)
        identity = beta[0]
        model = (self.neutral.reshape(-1) + identity @ self.identity_basis.T + prior[calm] @ self.code_basis.T)
        model = model.reshape(len(calm), -1, 3)
        observed = seen[calm][:, self.points].astype(np.float64) * [1.0, -1.0, -1.0]
        shift = np.median(align(observed, model, self.pose_weights) - model, axis=0)  # (L, 3)
        lids = np.zeros_like(shift)
        for rows in self.eye_rows:
            lids[rows] = shift[rows]
        lower_lids = lids.copy()
        lower_lids[self.upper_rows] = shift[self.below_rows]
        rest = ClipRest(identity, lids, lower_lids, np.median(openings[calm], axis=0), np.zeros(codes.shape[1]))
        refined = self.refine(seen[calm], prior[calm], rest=rest)
        return replace(rest, code=np.median(refined - prior[calm], axis=0))

    def _lids_at(self, rest: ClipRest, openings: np.ndarray) -> np.ndarray:
        """(F, 3L): the neutral at the points with the actor's lids, each upper lid as far from its shut place as the
        eye is open, by its opening (F, 2) over its opening at rest."""
        lids = np.repeat((self.neutral + rest.lower_lids)[None], len(openings), axis=0)
        for e, rows in enumerate(self.eye_rows):
            fraction = np.clip(openings[:, e] / max(rest.openings[e], 1e-6), 0.0, 2.0)[:, None, None]  # 2: wide eyes
            lids[:, rows] += fraction * (rest.lids[rows] - rest.lower_lids[rows])
        return lids.reshape(len(openings), -1)

    @staticmethod
    def _usable(landmarks: np.ndarray, codes: np.ndarray, found: np.ndarray | None) -> np.ndarray:
        found = np.isfinite(landmarks).all((1, 2)) if found is None else np.asarray(found, bool).copy()
        return found & np.isfinite(codes).all(1)

    def _fit(self, landmarks: np.ndarray, prior: np.ndarray, shared_identity: bool, identity: np.ndarray | None,
             neutral: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes (F, D) and betas (F, K) of frames that all have a face; `neutral`: the points' neutral per frame
        (F, 3L), the template's if None."""
        s = self.settings
        neutral = self.neutral.reshape(-1) if neutral is None else neutral
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
            model = neutral + beta @ self.identity_basis.T + z @ self.code_basis.T  # (F, 3L)
            aligned = align(observed, model.reshape(len(z), -1, 3), self.pose_weights).reshape(len(z), -1)
            if identity is None:
                residual = aligned - neutral - z @ self.code_basis.T  # what identity must explain
                if shared_identity:
                    beta[:] = np.linalg.solve(identity_system, iw.T @ residual.sum(0))
                else:
                    beta = np.linalg.solve(identity_system, iw.T @ residual.T).T
            target = aligned - neutral - beta @ self.identity_basis.T
            z = np.linalg.solve(code_system, bw.T @ target.T + lam * prior.T + depth_system @ prior.T).T
        return z, beta


def align(points: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(F, L, 3) points each moved by the similarity that best puts them on the targets, each point counted by its
    weight (L,)."""
    w = (weights / weights.sum())[None, :, None]
    ca, cb = (points * w).sum(1, keepdims=True), (targets * w).sum(1, keepdims=True)
    u, sv, vt = np.linalg.svd(np.swapaxes((points - ca) * w, 1, 2) @ (targets - cb))
    flip = np.ones((len(points), 3))
    flip[:, 2] = np.sign(np.linalg.det(u @ vt))
    rotation = u @ (flip[:, :, None] * vt)
    scale = (sv * flip).sum(1) / (w * (points - ca) ** 2).sum((1, 2))
    return (points - ca) @ rotation * scale[:, None, None] + cb


def lip_gap(landmarks: np.ndarray) -> np.ndarray:
    """(F,) mediapipe's inner-lip gap (points 13 and 14) over its eye-corner distance (33 and 263), per frame."""
    points = np.asarray(landmarks, np.float64)[..., :2]
    return (np.linalg.norm(points[:, 13] - points[:, 14], axis=1)
            / np.linalg.norm(points[:, 33] - points[:, 263], axis=1))


def eye_openings(landmarks: np.ndarray) -> np.ndarray:
    """(F, 2) each eye's lid gap over its width at mediapipe's points (the actor's right eye, then left)."""
    points = np.asarray(landmarks, np.float64)[..., :2]
    return np.stack([np.linalg.norm(points[:, upper] - points[:, lower], axis=1)
                     / np.linalg.norm(points[:, inner] - points[:, outer], axis=1)
                     for upper, lower, inner, outer in EYE_OPENINGS], axis=1)


def expression_activity(blendshapes: np.ndarray) -> np.ndarray:
    """(F,) the sum of the Face Landmarker's expression scores per frame (gaze and its `_neutral` left out)."""
    columns = [i for i, name in enumerate(BLENDSHAPE_NAMES) if not name.startswith("eyeLook") and name != "_neutral"]
    return np.asarray(blendshapes, np.float64)[:, columns].sum(1)


def calm_frames(gap: np.ndarray, activity: np.ndarray, openings: np.ndarray) -> np.ndarray:
    """Indices of a clip's calm frames: the CALM_FRACTION of its frames that rank lowest on the Face Landmarker's
    `activity`, plus twice the lip `gap`, plus how shut the more shut eye is (1 - its `openings` (F, 2)), each ranked
    over the clip. Closed mouths count twice because the network reads a real face at about a third of its motion: a
    rest read where it takes parted lips for nearly closed ones put the lips of closed frames through each other (on
    7.5% of the real clips' frames, rest read on the calmest tenth by activity alone). Open eyes count because the Face
    Landmarker scores shut eyes as looking down, which is gaze, not activity: liveportrait_d3's frames with the most
    closed lips had both eyes shut, and a rest read there (a rest on the calmest closed-mouth frames) read her winks
    at half their size."""
    from scipy.stats import rankdata

    count = max(1, int(round(CALM_FRACTION * len(gap))))
    score = sum(weight * (rankdata(values, method="ordinal") - 1) / max(len(gap) - 1, 1)
                for weight, values in ((1.0, activity), (2.0, gap), (1.0, -np.min(openings, axis=1))))
    return np.argsort(score, kind="stable")[:count]
