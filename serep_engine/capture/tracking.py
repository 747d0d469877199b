"""The tracking front end: mediapipe's face mesh (478 landmarks, with irises) per frame.

In video mode mediapipe tracks between frames. With several faces in view it follows the main track:
the face nearest to the previous frame's, else the largest. Frames without a face are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478


@dataclass
class FaceObservation:
    found: bool
    landmarks: np.ndarray  # (478, 3): x, y in pixels, z in pixels (mediapipe's relative depth x width)
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels


class FaceTracker:
    def __init__(self, video: bool = True, max_faces: int = 2, min_confidence: float = 0.5):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
        )
        self._previous_centre: np.ndarray | None = None

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Boxes (x0, y0, x1, y1) of every face in one frame."""
        height, width = rgb.shape[:2]
        result = self._mesh.process(rgb)
        boxes = []
        for face in result.multi_face_landmarks or []:
            points = np.array([(p.x * width, p.y * height) for p in face.landmark])
            boxes.append(np.concatenate([points.min(0), points.max(0)]))
        return boxes

    def track(self, rgb: np.ndarray) -> FaceObservation:
        """One RGB uint8 frame (H, W, 3) -> the main face's landmarks."""
        height, width = rgb.shape[:2]
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return FaceObservation(False, np.full((N_LANDMARKS, 3), np.nan, np.float32), np.full(4, np.nan))
        faces = [np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark], np.float32)
                 for face in result.multi_face_landmarks]
        boxes = [np.concatenate([f[:, :2].min(0), f[:, :2].max(0)]) for f in faces]
        if self._previous_centre is not None and len(faces) > 1:
            distances = [np.linalg.norm((b[:2] + b[2:]) / 2 - self._previous_centre) for b in boxes]
            main = int(np.argmin(distances))
        else:
            main = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        self._previous_centre = (boxes[main][:2] + boxes[main][2:]) / 2
        return FaceObservation(True, faces[main], boxes[main])
