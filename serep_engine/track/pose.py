"""Head pose from the tracked landmarks: a perspective-n-point fit of mediapipe's landmarks against the
same points on the template's neutral (cm). The camera is a pinhole with a focal length of the image's
larger side (a common guess for ordinary lenses); pose is returned as a rotation vector (radians) and a
translation (cm) in OpenCV's camera frame (x right, y down, z forward)."""

from __future__ import annotations

import cv2
import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.track.tracking import IRIS_LANDMARKS


class HeadPoseEstimator:
    def __init__(self, face_model: ICTModel):
        from serep_engine.track.correspondence import mediapipe_to_template

        vertex, valid = mediapipe_to_template(face_model)
        valid = valid.copy()
        valid[list(IRIS_LANDMARKS)] = False
        self.landmark_indices = np.flatnonzero(valid)
        # The template looks down +z with y up (OpenGL); OpenCV's camera looks down +z with y down.
        self.model_points = face_model.face_neutral[vertex[valid]].astype(np.float64) * [1.0, -1.0, -1.0]
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """(478, 2+) landmarks in pixels, (height, width) -> (6,) rotation vector + translation; NaN if unfit."""
        height, width = image_size
        focal = float(max(height, width))
        camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], np.float64)
        points = landmarks[self.landmark_indices, :2].astype(np.float64)
        if not np.isfinite(points).all():
            self.reset()
            return np.full(6, np.nan, np.float32)
        guess = self._previous is not None
        rvec, tvec = self._previous if guess else (np.zeros((3, 1)), np.array([[0.0], [0.0], [60.0]]))
        ok, rvec, tvec = cv2.solvePnP(self.model_points, points, camera, None, rvec.copy(), tvec.copy(),
                                      useExtrinsicGuess=guess, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            self.reset()
            return np.full(6, np.nan, np.float32)
        self._previous = (rvec, tvec)
        return np.concatenate([rvec.ravel(), tvec.ravel()]).astype(np.float32)
