"""Domain randomisation of renders: backgrounds, blur, noise, JPEG artefacts and occluders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour gradient with blurred blobs (uint8, size x size x 3); noise comes later, in `degrade`."""
    small = size // 4  # drawn and blurred at a quarter of the size: it is smooth anyway
    corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
    image = cv2.resize(corners, (small, small), interpolation=cv2.INTER_LINEAR)
    for _ in range(rng.integers(0, 6)):
        centre = tuple(int(c) for c in rng.integers(0, small, 2))
        axes = tuple(int(a) for a in rng.integers(small // 16 + 1, small // 3, 2))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
    image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 3)))
    return np.clip(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


class VideoBackgrounds:
    """Random square patches of frames of real clips that do not overlap a face: mediapipe looks at each
    frame and patches touching any face box (with a margin) are dropped. Frames are read once, kept small."""

    def __init__(self, videos: list[Path], frames_per_video: int = 8, size: int = 320, seed: int = 0):
        from serep_engine.track.tracking import FaceTracker

        rng = np.random.default_rng(seed)
        self.patches = []
        with FaceTracker(video=False, max_faces=4) as tracker:
            for video in videos:
                capture = cv2.VideoCapture(str(video))
                count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 1)
                for index in sorted(rng.choice(count, min(frames_per_video, count), replace=False)):
                    capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
                    ok, frame = capture.read()
                    if ok:
                        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                        self.patches += _face_free_patches(rgb, tracker.faces(rgb), rng, size)
                capture.release()

    def __len__(self) -> int:
        return len(self.patches)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        patch = self.patches[rng.integers(len(self.patches))]
        return patch[:, ::-1].copy() if rng.random() < 0.5 else patch.copy()


def _face_free_patches(rgb: np.ndarray, face_boxes: list[np.ndarray], rng: np.random.Generator, size: int,
                       tries: int = 6) -> list[np.ndarray]:
    height, width = rgb.shape[:2]
    side = min(height, width) // 3
    patches = []
    for _ in range(tries):
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        box = np.array([x0, y0, x0 + side, y0 + side])
        if all(_disjoint(box, face, margin=0.25 * (face[2] - face[0])) for face in face_boxes):
            patches.append(cv2.resize(rgb[y0:y0 + side, x0:x0 + side], (size, size)))
    return patches


def _disjoint(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    return a[2] < b[0] - margin or a[0] > b[2] + margin or a[3] < b[1] - margin or a[1] > b[3] + margin


def occlude(image: np.ndarray, rng: np.random.Generator, centre: np.ndarray, scale: float) -> np.ndarray:
    """A hand-sized blob or a bar over part of the face (in place); returns the occluder mask."""
    mask = np.zeros(image.shape[:2], np.uint8)
    offset = rng.normal(0, 0.35, 2) * scale
    point = tuple(int(v) for v in centre + offset)
    if rng.random() < 0.5:
        axes = tuple(int(v) for v in rng.uniform(0.15, 0.4, 2) * scale)
        cv2.ellipse(mask, point, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        half = int(rng.uniform(0.05, 0.12) * scale)
        cv2.rectangle(mask, (0, point[1] - half), (image.shape[1], point[1] + half), 1, -1)
    colour = rng.uniform(0, 255, 3)
    image[mask > 0] = (0.6 * colour + 0.4 * image[mask > 0]).astype(np.uint8)
    return mask > 0


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, sensor noise and JPEG compression at random strengths."""
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.3, 1.8)))
    if rng.random() < 0.7:
        noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(1, 8)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 95))])
        image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    return image
