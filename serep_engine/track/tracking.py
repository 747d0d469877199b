"""The tracking front end: mediapipe's face mesh (478 landmarks, with irises) per frame.

In video mode mediapipe tracks between frames. With several faces in view it follows the main track:
the face nearest to the previous frame's, else the largest. Frames without a face are flagged.

Mediapipe's face detector sees the whole frame shrunk to 128 pixels, so it misses a face smaller than about a
tenth of a large frame (a person at a distance in 4K). In frames of 1920 pixels or more where the whole frame
shows no face, square windows of the frame's height and half of it are searched; a face found in one is then
followed in a window four times its size, re-centred as it moves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 478
IRIS_LANDMARKS = range(468, 478)  # on the eyeballs, not on the face template
SEARCH_FROM = 1920  # longest side (pixels) from which frames without a face are searched window by window


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
        self._window: tuple[int, int, int, int] | None = None  # where a small face in a large frame is followed

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
        if self._window is not None:
            observation = self._track_in(rgb, self._window)
            if observation.found:
                self._follow(observation, width, height)
                return observation
            self._window = None
        observation = self._track_in(rgb, (0, 0, width, height))
        if observation.found or max(width, height) < SEARCH_FROM:
            return observation
        for window in _search_windows(width, height):
            found = self._track_in(rgb, window)
            if found.found:
                self._follow(found, width, height)
                return found
        return observation

    def _track_in(self, rgb: np.ndarray, window: tuple[int, int, int, int]) -> FaceObservation:
        """The main face in one window (x0, y0, x1, y1) of the frame, in the frame's pixels."""
        x0, y0, x1, y1 = window
        result = self._mesh.process(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
        if not result.multi_face_landmarks:
            return FaceObservation(False, np.full((N_LANDMARKS, 3), np.nan, np.float32), np.full(4, np.nan))
        width, height = x1 - x0, y1 - y0
        faces = [np.array([(p.x * width + x0, p.y * height + y0, p.z * width) for p in face.landmark], np.float32)
                 for face in result.multi_face_landmarks]
        boxes = [np.concatenate([f[:, :2].min(0), f[:, :2].max(0)]) for f in faces]
        if self._previous_centre is not None and len(faces) > 1:
            distances = [np.linalg.norm((b[:2] + b[2:]) / 2 - self._previous_centre) for b in boxes]
            main = int(np.argmin(distances))
        else:
            main = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        self._previous_centre = (boxes[main][:2] + boxes[main][2:]) / 2
        return FaceObservation(True, faces[main], boxes[main])

    def _follow(self, observation: FaceObservation, width: int, height: int) -> None:
        """Keep (or re-centre) a window four times the face's size around it; none once the face is large."""
        box = observation.box
        side = int(4 * max(box[2] - box[0], box[3] - box[1]))
        if side >= min(width, height):
            self._window = None
            return
        centre = (box[:2] + box[2:]) / 2
        if self._window is not None:
            x0, y0, x1, y1 = self._window
            if np.abs(centre - [(x0 + x1) / 2, (y0 + y1) / 2]).max() < (x1 - x0) / 8:
                return
        x0 = int(np.clip(centre[0] - side / 2, 0, width - side))
        y0 = int(np.clip(centre[1] - side / 2, 0, height - side))
        self._window = (x0, y0, x0 + side, y0 + side)


def _search_windows(width: int, height: int):
    """Square windows of the frame's short side, then of half of it, overlapping by half."""
    short = min(width, height)
    for side in (short, short // 2):
        step = side // 2
        for y0 in sorted({*range(0, height - side + 1, step), height - side}):
            for x0 in sorted({*range(0, width - side + 1, step), width - side}):
                yield x0, y0, x0 + side, y0 + side
