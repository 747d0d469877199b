"""A sampler of realistic ARKit-style expression weight vectors over ICT's 53 shapes.

Expressions are built from facial actions the way people make them: a few actions at a time (sparse),
actions that recruit several shapes together (a smile pulls the cheeks and squints the eyes), both
sides together or one side only (winks, one-sided smiles, a raised brow), sometimes at full strength,
and sometimes nothing at all (neutral). Opposed shapes (jaw left/right, looking up/down) are exclusive.
"""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import ICT_EXPRESSION_NAMES

INDEX = {name: i for i, name in enumerate(ICT_EXPRESSION_NAMES)}

# action -> shapes it recruits with their relative strength; "*" expands to both _L and _R.
ACTIONS: dict[str, dict[str, float]] = {
    "smile": {"mouthSmile_*": 1.0, "cheekSquint_*": 0.6, "eyeSquint_*": 0.3, "mouthUpperUp_*": 0.2},
    "frown": {"mouthFrown_*": 1.0, "browDown_*": 0.5, "mouthShrugLower": 0.4},
    "surprise": {"browInnerUp_*": 1.0, "browOuterUp_*": 0.9, "eyeWide_*": 0.8, "jawOpen": 0.4},
    "sad": {"browInnerUp_*": 0.8, "mouthFrown_*": 0.7, "mouthShrugUpper": 0.3},
    "anger": {"browDown_*": 1.0, "noseSneer_*": 0.5, "eyeSquint_*": 0.4, "mouthPress_*": 0.5},
    "disgust": {"noseSneer_*": 1.0, "mouthUpperUp_*": 0.7, "cheekSquint_*": 0.3},
    "blink": {"eyeBlink_*": 1.0},
    "squint": {"eyeSquint_*": 1.0, "cheekSquint_*": 0.3},
    "wide": {"eyeWide_*": 1.0},
    "brow_raise": {"browInnerUp_*": 0.7, "browOuterUp_*": 1.0},
    "jaw_open": {"jawOpen": 1.0, "mouthLowerDown_*": 0.3},
    "speech_open": {"jawOpen": 0.5, "mouthLowerDown_*": 0.5, "mouthUpperUp_*": 0.4, "mouthStretch_*": 0.2},
    "funnel": {"mouthFunnel": 1.0, "jawOpen": 0.2},
    "pucker": {"mouthPucker": 1.0},
    "press": {"mouthPress_*": 1.0, "mouthClose": 0.3},
    "roll_lips": {"mouthRollLower": 1.0, "mouthRollUpper": 0.8},
    "shrug": {"mouthShrugLower": 1.0, "mouthShrugUpper": 0.6},
    "stretch": {"mouthStretch_*": 1.0},
    "dimple": {"mouthDimple_*": 1.0},
    "puff": {"cheekPuff_*": 1.0, "mouthClose": 0.2},
    "jaw_forward": {"jawForward": 1.0},
    "mouth_close": {"jawOpen": 0.5, "mouthClose": 0.5},
}
SIDED_ACTIONS = ("smile", "frown", "blink", "squint", "wide", "brow_raise", "disgust", "stretch", "dimple", "puff")
EXCLUSIVE = (("jawLeft", "jawRight"), ("mouthLeft", "mouthRight"))
GAZE = {
    "left": ("eyeLookOut_L", "eyeLookIn_R"),
    "right": ("eyeLookIn_L", "eyeLookOut_R"),
    "up": ("eyeLookUp_L", "eyeLookUp_R"),
    "down": ("eyeLookDown_L", "eyeLookDown_R"),
}
ACTION_NAMES = tuple(ACTIONS)


def _intensity(rng: np.random.Generator) -> float:
    """Mostly moderate, a fifth of the time at (or near) full strength."""
    return 1.0 if rng.random() < 0.2 else float(rng.beta(2.0, 2.0))


def sample_expression(rng: np.random.Generator, neutral_probability: float = 0.05) -> np.ndarray:
    """One (53,) weight vector in [0, 1]."""
    weights = np.zeros(len(ICT_EXPRESSION_NAMES), np.float32)
    if rng.random() < neutral_probability:
        return weights
    for action in rng.choice(ACTION_NAMES, size=1 + rng.poisson(1.2), replace=True):
        strength = _intensity(rng)
        sides = {"L": 1.0, "R": 1.0}
        if action in SIDED_ACTIONS and rng.random() < 0.35:  # one side only, or clearly uneven
            strong, weak = ("L", "R") if rng.random() < 0.5 else ("R", "L")
            sides = {strong: 1.0, weak: float(rng.uniform(0.0, 0.3))}
        elif action in SIDED_ACTIONS:
            sides = {s: float(np.clip(1.0 + rng.normal(0, 0.08), 0, 1)) for s in sides}
        for pattern, share in ACTIONS[action].items():
            names = [pattern.replace("*", s) for s in "LR"] if "*" in pattern else [pattern]
            for name in names:
                side = sides[name[-1]] if "*" in pattern else 1.0
                weights[INDEX[name]] = max(weights[INDEX[name]], strength * share * side)
    if rng.random() < 0.3:  # gaze: both eyes turn the same way
        for name in GAZE[rng.choice(tuple(GAZE))]:
            weights[INDEX[name]] = _intensity(rng)
    for pair in EXCLUSIVE:
        if rng.random() < 0.15:
            weights[INDEX[pair[rng.integers(2)]]] = _intensity(rng)
    if rng.random() < 0.3:  # any single shape, so every shape is seen at every strength
        weights[rng.integers(len(weights))] = _intensity(rng)
    if rng.random() < 0.3:  # a little of everything nearby: real faces are never exactly sparse
        weights += (rng.random(len(weights)) < 0.1) * rng.uniform(0, 0.15, len(weights)).astype(np.float32)
    return np.clip(weights, 0.0, 1.0)


def sample_expressions(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([sample_expression(rng) for _ in range(count)])


def ict_weights(face_model, arkit: np.ndarray) -> np.ndarray:
    """(F, 52) ARKit weights -> (F, 53) ICT expression weights (both halves of a split shape at its weight)."""
    from serep_engine.contract.arkit import ARKIT_NAMES, arkit_name

    columns = [ARKIT_NAMES.index(arkit_name(name)) for name in face_model.expression_names]
    return np.asarray(arkit, np.float32)[:, columns]
