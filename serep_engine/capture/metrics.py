"""The landmark metric of training and `serep eval landmarks` (numpy only)."""

from __future__ import annotations

import numpy as np


def nme_inner51(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per image: mean distance over points 17-67 divided by the outer-eye-corner distance (36, 45)."""
    normaliser = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=1)
    return np.linalg.norm(predicted[:, 17:] - truth[:, 17:], axis=2).mean(1) / normaliser
