"""ARKit shapes on an identity, and solving per-frame ARKit weights from decoded displacements (the names and
their spellings are the contract's: `contract/arkit.py`).

The ARKit shapes of an identity are ICT's 53 shapes carried onto that identity's neutral by deformation
transfer; ICT splits browInnerUp and cheekPuff into _L/_R halves (an ARKit shape is the sum of its halves)
and has no tongue, so tongueOut is reported absent and always solved as 0.
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy.optimize import lsq_linear

from serep_engine.contract.arkit import ARKIT_NAMES, arkit_name
from serep_engine.facemodel.ict import ICTModel
from serep_engine.facemodel.identities import TRANSFER_VERSION, transferred_shapes


def ict_components(face_model: ICTModel) -> list[list[int]]:
    """For each ARKit name, the indices of the ICT expression shapes it sums (empty for tongueOut)."""
    by_name: dict[str, list[int]] = {name: [] for name in ARKIT_NAMES}
    for index, ict_name in enumerate(face_model.expression_names):
        by_name[arkit_name(ict_name)].append(index)
    return [by_name[name] for name in ARKIT_NAMES]


def arkit_shapes(face_model: ICTModel, shapes: np.ndarray) -> np.ndarray:
    """(52, V, 3) float32: each ARKit shape from ICT's 53 (V, 3) `shapes` (split halves summed, tongueOut zero)."""
    return np.stack([shapes[c].sum(0) if c else np.zeros(shapes.shape[1:], np.float32)
                     for c in ict_components(face_model)]).astype(np.float32)


def neutral_shapes(face_model: ICTModel, neutral: np.ndarray) -> np.ndarray:
    """(53, 9409, 3) ICT expression shapes carried onto a neutral of template topology by deformation
    transfer (the same transfer as `identities.identity_shapes`, keyed by the neutral itself); cached."""
    neutral = np.ascontiguousarray(neutral, np.float32)
    key = hashlib.sha1(neutral.tobytes() + TRANSFER_VERSION.encode()).hexdigest()
    return transferred_shapes(face_model, neutral, f"neutral-{key[:20]}")


# The eyes' turn: the eyeballs', which a decoded face does not carry; given by the tracker (its iris), never solved
GAZE = tuple(name for name in ARKIT_NAMES if name.startswith("eyeLook"))


class ARKitSolver:
    """Per-frame ARKit weights in [0, 1] whose blend of the identity's ARKit shapes best matches decoded
    displacements (bounded least squares over all template vertices).

    Gaze (the eight eyeLook shapes) is not solved from the face. ICT's eyeLook shapes also move the lids, and solved
    from the lids they took the blinks' closing: on liveportrait_d3 a closed right eye read eyeBlinkRight 0.37 with
    eyeLookDownRight 0.98, and winks came out at 0.56 of mediapipe's asymmetry (1.41 without them; `serep eval
    real`). `solve(..., gaze=)` reports the tracker's gaze as it is; the lids stay the face's to explain, since the
    tracker reads a closed eye as one looking down (eyeLookDown 0.6-0.75 on that clip's closed eyes), and taking the
    gaze shapes' lid motion out first left closed eyes half open."""

    names = ARKIT_NAMES

    def __init__(self, face_model: ICTModel, neutral: np.ndarray, shapes: np.ndarray | None = None):
        shapes = neutral_shapes(face_model, neutral) if shapes is None else shapes
        self.present = np.array([bool(c) for c in ict_components(face_model)])
        self.absent = tuple(name for name, here in zip(ARKIT_NAMES, self.present, strict=True) if not here)
        self.gaze = np.array([ARKIT_NAMES.index(name) for name in GAZE])
        self.solved = self.present.copy()
        self.solved[self.gaze] = False
        self.shapes = arkit_shapes(face_model, shapes)  # (52, V, 3) on this identity; absent ones are zero
        design = self.shapes[self.solved].reshape(int(self.solved.sum()), -1).T.astype(np.float64)
        self._q, self._r = np.linalg.qr(design)  # the solve works on the small triangular system

    def solve(self, displacements: np.ndarray, gaze: np.ndarray | None = None) -> np.ndarray:
        """(F, 9409, 3) template-frame displacements (cm), and the tracker's (F, 8) GAZE weights if known (else
        zero), reported as they are -> (F, 52) float32 weights in [0, 1]."""
        displacements = np.asarray(displacements, np.float64)
        weights = np.zeros((len(displacements), len(ARKIT_NAMES)), np.float32)
        if gaze is not None:
            weights[:, self.gaze] = np.clip(np.nan_to_num(np.asarray(gaze, np.float32)), 0.0, 1.0)
        projected = displacements.reshape(len(displacements), -1) @ self._q  # (F, solved)
        for f, rhs in enumerate(projected):
            weights[f, self.solved] = lsq_linear(self._r, rhs, bounds=(0.0, 1.0), method="bvls").x
        return np.clip(weights, 0.0, 1.0)

    def blend(self, weights: np.ndarray) -> np.ndarray:
        """(F, 52) weights -> (F, 9409, 3) displacements on the identity."""
        return np.tensordot(np.asarray(weights, np.float32), self.shapes, axes=1)


# ARKit keys the capture network reads better than the landmark refinement: its own solved keys are kept for them. On
# the real clips where the tracker's own score for the key passes 0.3 (development script; the tracker is a
# reference, not the truth) the network's keys follow it at: mouthPucker 0.79 against the refined keys' 0.50 (15
# clips), mouthUpperUp 0.74 / 0.74 against 0.24 / 0.30 (18-19), mouthFunnel 0.61 against 0.13 (3), mouthShrugLower
# 0.34 against -0.20 (4), mouthFrown 0.37 / 0.49 against 0.00 / 0.06 (1, and the refined mouthFrown keys moved 40
# times as much as the tracker's); over all clips (`benchmarks/arkit_vs_tracker.py`, with and without
# --no-follow-landmarks) cheekSquint 0.67 / 0.40 against -0.19 / 0.00 and noseSneer 0.05 / 0.51 against -0.20 / 0.08.
# On the held-out takes the same (funnel 0.65 against 0.17, pucker 0.67 against 0.32). Their codes held at the
# network's inside the refinement did not carry it (the rest of the refined face still solved to the other keys), so
# the choice is made on the keys.
NETWORK_KEYS = ("mouthFunnel", "mouthPucker", "mouthFrownLeft", "mouthFrownRight", "mouthShrugLower",
                "mouthUpperUpLeft", "mouthUpperUpRight", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
                "noseSneerRight")
# browDown is the network's too, averaged with the tracker's own score when known (`mean_motion`). The refined browDown
# does not follow the brows: against the real clips' brow height (the benchmark's measure from mediapipe's points,
# lowered brows positive) it correlates at -0.04 over the 23 clips (dafoe's snarls -0.82, skarsgard -0.73: it reads
# browDown 0.54 on skarsgard's raised brows, frame 130), the network's at 0.50, the tracker's at 0.65, their average
# at 0.71; on the held-out takes 0.07 / 0.14, 0.83 / 0.81, 0.71 / 0.56 and 0.86 / 0.81 (development script). The
# tracker's alone fires with broad smiles (liveportrait_d19 frames 92-94: 0.52, a grin read as a frown; the network's
# 0.00, the average 0.19). A real frown reads smaller than the tracker's (dafoe frame 58: 0.29 against 0.68).
BROW_DOWN_KEYS = ("browDownLeft", "browDownRight")
# keys both read well: how much more motion the refinement sees than the network, per clip, is read on them
SHARED_KEYS = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight")
# Keys whose two readings are averaged: the motion of each, the network's scaled to the refinement's size, on the
# refinement's rest. Two readings with errors of their own: on the real clips the average follows the tracker better
# than either alone (development script, all 23 clips: jawOpen 0.67 against refined 0.62 / network 0.60, smiles 0.87 /
# 0.86 against 0.80 / 0.81 and 0.85 / 0.84, browInnerUp 0.69 against 0.63 / 0.58, mouthLeft / Right 0.59 / 0.56 against
# 0.53 / 0.53, eyeWide 0.56 / 0.44 against 0.42 / 0.33 and 0.48 / 0.40), and on the held-out takes it reads the turned
# views the refinement misreads (jawOpen 0.92 against 0.81, smiles 0.82 / 0.79 against 0.60 / 0.66, browInnerUp 0.83
# against 0.58). One-sided smiles keep their side (the smiles' left-right difference on the 149 clip frames where the
# tracker's passes 0.15: the same sign on 0.90, refined 0.88) at a smaller size (0.49 of the tracker's, refined 0.65).
# Not the blinks: the network misses winks (liveportrait_d3's left wink, frame 14: 0.03 against the refinement's 0.58
# and the tracker's 0.52; averaged 0.31) that the refinement reads, and averaging halves them.
AVERAGED_KEYS = ("jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "mouthLeft", "mouthRight",
                 "eyeWideLeft", "eyeWideRight")
# The blinks' second reading is the tracker's own (the Face Landmarker's blink scores, which the result keeps): it sees
# winks (liveportrait_d3's left wink, frame 14: 0.52 / 0.11) where the network does not. Averaged the same way (its
# motion scaled to the refinement's size: it reads a shut eye at 0.5-0.8), the blinks follow the clips' eye openings
# (the benchmark's measure from mediapipe's points; development script) at 0.91 / 0.90 against 0.83 / 0.82 refined,
# winks keep their side on all 33 wink frames (magnitude 1.35 of the tracker's asymmetry, refined 1.23), and the
# held-out takes read 0.74 / 0.70 against 0.69 / 0.65 (the tracker alone 0.72 / 0.66).
TRACKER_KEYS = ("eyeBlinkLeft", "eyeBlinkRight")
MAX_NETWORK_GAIN = 4.0
REST_QUANTILE = 0.1  # a clip's rest for the network's keys: this quantile of each key over the clip
# A head turned from the camera hides the far side of the face, and every reading of its keys falls with it: on the
# held-out takes at 60 degrees the far eye's blink reads 0.41-0.48 (the near eye's 0.57-0.71), the far smile 0.52-0.60
# (0.79-0.80). Past FAR_SIDE_FROM_DEG the far side's keys move toward the near side's, all the way at
# FAR_SIDE_HIDDEN_DEG (`far_side_from_near`). `serep eval real`, takes: blinks 0.74 / 0.70 -> 0.79 / 0.74, smiles
# 0.83 / 0.79 -> 0.88 / 0.83 (browDown 0.86 / 0.81 -> 0.87 / 0.84, development script). A wink on the hidden side is
# lost; it was already misread there (alex_rom_4, the take with winks, right blink at -60 degrees: 0.39 -> 0.40).
# Real clips rarely turn past 30 degrees (3 of the 23, up to 38 degrees).
FAR_SIDE_FROM_DEG, FAR_SIDE_HIDDEN_DEG = 30.0, 60.0
SIDE_PAIRS = tuple((name, name[:-len("Left")] + "Right") for name in ARKIT_NAMES
                   if name.endswith("Left") and name not in GAZE and name != "mouthLeft")


def fused_keys(refined: np.ndarray, network: np.ndarray, tracker: np.ndarray | None = None,
               yaw: np.ndarray | None = None) -> np.ndarray:
    """(F, 52) ARKit keys of one clip from the refined capture's, the network's own (F, 52), if known the tracker's
    scores in ARKIT_NAMES order (F, 52; `tracker_keys`) and the head's yaw in degrees (F,; `head_yaw`).

    NETWORK_KEYS and BROW_DOWN_KEYS are the network's, as motion from the clip's rest (REST_QUANTILE: the network
    reads a little of these keys into a face at rest; taken as they are, mouthFrown sat 0.16 above the tracker's on
    average over the real clips, funnel 0.09; from the rest 0.04 and 0.04), scaled by the clip's gain (the network
    reads a real face at a third to a half of its motion: the least squares slope of the refined SHARED_KEYS' motion
    on the network's, through zero, within 1-MAX_NETWORK_GAIN). AVERAGED_KEYS are the mean of the refined and the
    network's motion, TRACKER_KEYS of the refined and the tracker's, BROW_DOWN_KEYS of the network's and the
    tracker's (`mean_motion`). The rest are the refinement's. Then the far side of a turned head is read from the near
    side (`far_side_from_near`)."""
    shared = [ARKIT_NAMES.index(name) for name in SHARED_KEYS]
    taken = [ARKIT_NAMES.index(name) for name in NETWORK_KEYS + BROW_DOWN_KEYS]
    refined, network = np.asarray(refined, np.float64), np.asarray(network, np.float64)
    motion = network - np.quantile(network, REST_QUANTILE, axis=0)
    seen = refined[:, shared] - np.quantile(refined[:, shared], REST_QUANTILE, axis=0)
    gain = np.clip((seen * motion[:, shared]).sum() / max((motion[:, shared] ** 2).sum(), 1e-12), 1.0,
                   MAX_NETWORK_GAIN)
    out = refined.copy()
    out[:, taken] = np.clip(gain * motion[:, taken], 0.0, 1.0)
    averaged = [ARKIT_NAMES.index(name) for name in AVERAGED_KEYS]
    out[:, averaged] = mean_motion(refined[:, averaged], network[:, averaged])
    if tracker is not None:
        tracker = np.asarray(tracker, np.float64)
        for names, first in ((TRACKER_KEYS, refined), (BROW_DOWN_KEYS, out)):
            columns = [ARKIT_NAMES.index(name) for name in names]
            out[:, columns] = mean_motion(first[:, columns], tracker[:, columns])
    if yaw is not None:
        out = far_side_from_near(out, yaw)
    return out.astype(np.float32)


def mean_motion(first: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(F, K) keys from two readings of them (F, K): the mean of their motions from the clip's rest (REST_QUANTILE),
    the other's scaled per key to the first's size (the ratio of their standard deviations over the clip, within
    1-MAX_NETWORK_GAIN), on the first's rest, in [0, 1]."""
    rest = np.quantile(first, REST_QUANTILE, axis=0)
    seen = first - rest
    motion = other - np.quantile(other, REST_QUANTILE, axis=0)
    scale = np.clip(seen.std(0) / np.maximum(motion.std(0), 1e-12), 1.0, MAX_NETWORK_GAIN)
    return np.clip(rest + (seen + scale * motion) / 2, 0.0, 1.0)


def far_side_from_near(keys: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(F, 52) keys with each SIDE_PAIRS key of the face's far side moved toward its near-side partner by how far the
    head is turned (F,) degrees (the tracker's: negative turns the face's left side to the camera; NaN: frontal):
    untouched up to FAR_SIDE_FROM_DEG, the near side's at FAR_SIDE_HIDDEN_DEG and beyond."""
    yaw = np.nan_to_num(np.asarray(yaw, np.float64))
    hidden = np.clip((np.abs(yaw) - FAR_SIDE_FROM_DEG) / (FAR_SIDE_HIDDEN_DEG - FAR_SIDE_FROM_DEG), 0.0, 1.0)
    left_near = yaw < 0
    out = np.array(keys, copy=True)
    for left_name, right_name in SIDE_PAIRS:
        left, right = ARKIT_NAMES.index(left_name), ARKIT_NAMES.index(right_name)
        near = np.where(left_near, keys[:, left], keys[:, right])
        far = np.where(left_near, keys[:, right], keys[:, left])
        moved = far + hidden * (near - far)
        out[:, left] = np.where(left_near, keys[:, left], moved)
        out[:, right] = np.where(left_near, moved, keys[:, right])
    return out


def head_yaw(matrices: np.ndarray) -> np.ndarray:
    """(F,) the head's yaw in degrees from the tracker's (F, 4, 4) facial transformation matrices (NaN without a
    face): negative when the face's left side turns toward the camera."""
    rotation = np.asarray(matrices, np.float64)[:, :3, :3]
    return np.degrees(np.arctan2(rotation[:, 0, 2], rotation[:, 2, 2]))


def tracker_keys(blendshapes: np.ndarray) -> np.ndarray:
    """(F, 52) the tracker's scores (F, len(BLENDSHAPE_NAMES)) in ARKIT_NAMES order (tongueOut, which it lacks, 0)."""
    from serep_engine.track.tracking import BLENDSHAPE_NAMES

    out = np.zeros((len(blendshapes), len(ARKIT_NAMES)), np.float32)
    for column, name in enumerate(ARKIT_NAMES):
        if name in BLENDSHAPE_NAMES:
            out[:, column] = np.asarray(blendshapes)[:, BLENDSHAPE_NAMES.index(name)]
    return out
