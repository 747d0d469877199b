"""ARKit interchange: Apple's 52 blend-shape names, recognising them on a user's rig in the usual spellings,
and solving per-frame ARKit weights from decoded displacements.

The ARKit shapes of an identity are ICT's 53 shapes carried onto that identity's neutral by deformation
transfer; ICT splits browInnerUp and cheekPuff into _L/_R halves (an ARKit shape is the sum of its halves)
and has no tongue, so tongueOut is reported absent and always solved as 0.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from scipy.optimize import lsq_linear

from serep_engine.facemodel.ict import ICTModel
from serep_engine.facemodel.identities import TRANSFER_VERSION, transferred_shapes

# Apple's order (ARFaceAnchor.BlendShapeLocation grouped by eye, jaw and mouth, brows, cheeks, nose, tongue).
ARKIT_NAMES = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
_SPLIT_HALVES = {"browInnerUp", "cheekPuff"}  # ICT has _L and _R halves of these


def _key(name: str) -> str:
    """Spelling-free key: lower-case letters and digits, a trailing Left/Right/L/R side as l/r."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for word, side in (("left", "l"), ("right", "r")):
        if key.endswith(word):
            return key[: -len(word)] + side
    return key


_CANONICAL = {_key(name): name for name in ARKIT_NAMES}
_CANONICAL.update({_key(f"{name}_{side}"): name for name in _SPLIT_HALVES for side in "LR"})


def arkit_name(name: str) -> str | None:
    """The ARKit name a shape key's name spells (`EyeBlink_L`, `eye_blink_left`, `Face.eyeBlinkLeft`,
    `eyeBlink.L`, ...), or None. Split halves (`browInnerUp_L`) map to their ARKit shape."""
    candidates = [name] + [name[i + 1:] for i, char in enumerate(name) if char in ".:|/"]
    for candidate in candidates:
        found = _CANONICAL.get(_key(candidate))
        if found is not None:
            return found
    return None


def match_arkit_names(names) -> dict[str, str]:
    """{user shape-key name: ARKit name} for the names that spell an ARKit shape."""
    return {name: canonical for name in names if (canonical := arkit_name(name)) is not None}


def ict_components(face_model: ICTModel) -> list[list[int]]:
    """For each ARKit name, the indices of the ICT expression shapes it sums (empty for tongueOut)."""
    by_name: dict[str, list[int]] = {name: [] for name in ARKIT_NAMES}
    for index, ict_name in enumerate(face_model.expression_names):
        by_name[arkit_name(ict_name)].append(index)
    return [by_name[name] for name in ARKIT_NAMES]


def neutral_shapes(face_model: ICTModel, neutral: np.ndarray) -> np.ndarray:
    """(53, 9409, 3) ICT expression shapes carried onto a neutral of template topology by deformation
    transfer (the same transfer as `identities.identity_shapes`, keyed by the neutral itself); cached."""
    neutral = np.ascontiguousarray(neutral, np.float32)
    key = hashlib.sha1(neutral.tobytes() + TRANSFER_VERSION.encode()).hexdigest()
    return transferred_shapes(face_model, neutral, f"neutral-{key[:20]}")


class ARKitSolver:
    """Per-frame ARKit weights in [0, 1] whose blend of the identity's ARKit shapes best matches decoded
    displacements (bounded least squares over all template vertices)."""

    names = ARKIT_NAMES

    def __init__(self, face_model: ICTModel, neutral: np.ndarray, shapes: np.ndarray | None = None):
        shapes = neutral_shapes(face_model, neutral) if shapes is None else shapes
        components = ict_components(face_model)
        self.present = np.array([bool(c) for c in components])
        self.absent = tuple(name for name, here in zip(ARKIT_NAMES, self.present, strict=True) if not here)
        # (52, V, 3): each ARKit shape on this identity; absent ones are zero.
        self.shapes = np.stack([shapes[c].sum(0) if c else np.zeros(shapes.shape[1:], np.float32)
                                for c in components]).astype(np.float32)
        design = self.shapes[self.present].reshape(int(self.present.sum()), -1).T.astype(np.float64)
        self._q, self._r = np.linalg.qr(design)  # the solve works on the small triangular system

    def solve(self, displacements: np.ndarray) -> np.ndarray:
        """(F, 9409, 3) template-frame displacements (cm) -> (F, 52) float32 weights in [0, 1]."""
        displacements = np.asarray(displacements, np.float64)
        projected = displacements.reshape(len(displacements), -1) @ self._q  # (F, present)
        weights = np.zeros((len(displacements), len(ARKIT_NAMES)), np.float32)
        for f, rhs in enumerate(projected):
            weights[f, self.present] = lsq_linear(self._r, rhs, bounds=(0.0, 1.0), method="bvls").x
        return np.clip(weights, 0.0, 1.0)

    def blend(self, weights: np.ndarray) -> np.ndarray:
        """(F, 52) weights -> (F, 9409, 3) displacements on the identity."""
        return np.tensordot(np.asarray(weights, np.float32), self.shapes, axes=1)
