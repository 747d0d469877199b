"""The one face crop used for real frames (capture front end) and synthetic renders alike.

A similarity transform (scale, rotation, translation) takes five facial points (the two eye centres,
the nose tip, the two mouth corners, in image-left to image-right order) to fixed positions in a square
crop; the margins keep the forehead and the chin inside.
"""

from __future__ import annotations

import cv2
import numpy as np

# Five points in a unit crop: image-left eye, image-right eye, nose tip, image-left / image-right mouth corner.
CANONICAL_POINTS = np.array([[0.36, 0.42], [0.64, 0.42], [0.50, 0.57], [0.39, 0.71], [0.61, 0.71]], np.float64)
# The same five points as indices into the 68-point (iBUG / Multi-PIE) layout: eyes are averaged.
FIVE_FROM_68 = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))


def five_points_from_68(landmarks68: np.ndarray) -> np.ndarray:
    return np.stack([landmarks68[list(group)].mean(0) for group in FIVE_FROM_68])


def similarity_to_crop(points: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix of the least-squares similarity taking five image points to the crop's canonical points
    (Umeyama, no reflection)."""
    source = np.asarray(points, np.float64)
    target = CANONICAL_POINTS * size
    source_mean, target_mean = source.mean(0), target.mean(0)
    s, t = source - source_mean, target - target_mean
    # Complex-number form of a 2D similarity: t ~ a * s with a = scale * e^{i angle}.
    sc, tc = s[:, 0] + 1j * s[:, 1], t[:, 0] + 1j * t[:, 1]
    a = (np.conj(sc) @ tc) / (np.conj(sc) @ sc).real
    rotation_scale = np.array([[a.real, -a.imag], [a.imag, a.real]])
    translation = target_mean - rotation_scale @ source_mean
    return np.hstack([rotation_scale, translation[:, None]])


def crop_face(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, transform, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    return np.linalg.inv(np.vstack([transform, [0.0, 0.0, 1.0]]))[:2]


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return points @ transform[:, :2].T + transform[:, 2]
