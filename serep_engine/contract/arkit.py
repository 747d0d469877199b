"""Apple's 52 ARKit blend-shape names and recognising them in the usual spellings: what a take's columns, a
result's `arkit_names` and the worker's `arkit_keys` ({shape key: ARKit name}) are written in."""

from __future__ import annotations

import re

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
