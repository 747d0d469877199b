"""The tracking front end: mediapipe's Face Landmarker (Tasks API, mediapipe >= 1.2) per frame: 478 landmarks
(with irises), 52 blendshape scores (`_neutral` and 51 ARKit names) and the facial transformation matrix.

The model bundle (`face_landmarker.task`, Apache-2.0) is read by path from the data folder: `../shared/data` in a
checkout, the extension's own copy when installed (`paths.mediapipe_model`). Nothing is downloaded, and mediapipe's
usage-stats upload is switched off before a landmarker is made (`track/offline.py`).

Clips use VIDEO mode (timestamps from the stream's fps), photos and renders IMAGE mode. With several faces in view
the tracker follows the main track: the face nearest to the previous frame's, else the largest. Frames without a
face are flagged.

Mediapipe's face detector sees the whole frame shrunk to 128 pixels, so it misses a face smaller than about a
tenth of a large frame (a person at a distance in 4K). In frames of 1920 pixels or more where the whole frame
shows no face, square windows of the frame's height and half of it are searched; a face found in one is then
followed in a window four times its size, re-centred as it moves.

The Landmarker's face detector misses many strongly turned faces (SynthREX's 60-degree views: found in 49% of the
frames one by one, where the legacy face mesh kept 99% by following its own landmarks). So in a clip the VIDEO-mode
Landmarker follows one face from frame to frame and keeps it down to a presence of KEEP_CONFIDENCE, and a face
followed a moment ago (`REFIND_FRAMES`) but not found is looked for again where it was: square views around its last
box, enlarged to the detector's liking, as they are and with their lightness equalised (CLAHE: pale, low-contrast
faces are the ones lost), each also mirrored (the detector finds some faces turned one way and not the other); the
first view that shows a face gives the frame's landmarks.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from serep_engine.paths import mediapipe_model

N_LANDMARKS = 478
IRIS_LANDMARKS = range(468, 478)  # on the eyeballs, not on the face template
SEARCH_FROM = 1920  # longest side (pixels) from which frames without a face are searched window by window
KEEP_CONFIDENCE = 0.1  # presence and tracking confidence down to which a followed face is kept (VIDEO mode)
REFIND_FRAMES = 15  # a face lost for at most this many frames is looked for around its last place
REFIND_VIEWS = ((1.6, False), (1.6, True), (2.2, False))  # (view side / face size, lightness equalised)
REFIND_SIZE = 256  # pixels of a re-find view's side
# The Landmarker's blendshape categories, in its order.
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight",
)

BLENDSHAPE_MIRROR = [BLENDSHAPE_NAMES.index(name.replace("Left", "_").replace("Right", "Left").replace("_", "Right"))
                     if "Left" in name or "Right" in name else i for i, name in enumerate(BLENDSHAPE_NAMES)]


@dataclass
class FaceObservation:
    found: bool
    landmarks: np.ndarray  # (478, 3): x, y in pixels, z in pixels (mediapipe's relative depth x width)
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    blendshapes: np.ndarray  # (52,) scores in BLENDSHAPE_NAMES order (NaN without a face)
    matrix: np.ndarray  # (4, 4) canonical face (cm) -> camera of the tracked view (NaN without a face)

    @classmethod
    def none(cls) -> FaceObservation:
        return cls(False, np.full((N_LANDMARKS, 3), np.nan, np.float32), np.full(4, np.nan),
                   np.full(len(BLENDSHAPE_NAMES), np.nan, np.float32), np.full((4, 4), np.nan, np.float32))


class FaceTracker:
    """`video`: frames of one stream, in order, at `fps` (VIDEO mode); else independent images (IMAGE mode)."""

    def __init__(self, video: bool = True, max_faces: int = 2, min_confidence: float = 0.5, fps: float = 30.0):
        from serep_engine.compat import stand_in_for_matplotlib
        from serep_engine.track.offline import ensure_offline

        stand_in_for_matplotlib()  # before mediapipe is imported
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        ensure_offline()
        self._image = mp.Image
        self._srgb = mp.ImageFormat.SRGB

        def landmarker(mode):
            video_mode = mode == vision.RunningMode.VIDEO  # follows one face from frame to frame
            keep = min(min_confidence, KEEP_CONFIDENCE)
            options = vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(mediapipe_model())), running_mode=mode,
                num_faces=1 if video_mode else max_faces, min_face_detection_confidence=min_confidence,
                min_face_presence_confidence=keep if video_mode else min_confidence,
                min_tracking_confidence=keep if video_mode else min_confidence,
                output_face_blendshapes=True, output_facial_transformation_matrixes=True)
            with _quiet_native_logs():
                made = vision.FaceLandmarker.create_from_options(options)
                if mode == vision.RunningMode.IMAGE:  # the graph's start-up notices come with the first frame
                    made.detect(self._image(image_format=self._srgb, data=np.zeros((64, 64, 3), np.uint8)))
            return made

        self._make = landmarker
        self._video = landmarker(vision.RunningMode.VIDEO) if video else None
        self._still = None if video else landmarker(vision.RunningMode.IMAGE)  # made on first use with video
        self._image_mode = vision.RunningMode.IMAGE
        self._frame_ms = 1000.0 / fps
        self._frames = 0
        self._last_ms = -1
        self._previous_centre: np.ndarray | None = None
        self._last_box: np.ndarray | None = None  # the main face's box when last found, and frames since then
        self._lost_for = 0
        self._mirror: np.ndarray | None = None  # mediapipe's landmark mirror partners, loaded on first need
        self._window: tuple[int, int, int, int] | None = None  # where a small face in a large frame is followed

    def close(self) -> None:
        """Close it (or use `with`): mediapipe's own __del__ fails when Python exits with a landmarker open."""
        for landmarker in (self._video, self._still):
            if landmarker is not None:
                landmarker.close()
        self._video = self._still = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _detect(self, rgb: np.ndarray, still: bool):
        """The Landmarker's result on one RGB view: VIDEO mode for the stream's own view, IMAGE for searches."""
        image = self._image(image_format=self._srgb, data=np.ascontiguousarray(rgb, np.uint8))  # views misread
        if still or self._video is None:
            if self._still is None:
                self._still = self._make(self._image_mode)
            return self._still.detect(image)
        self._last_ms = max(round(self._frames * self._frame_ms), self._last_ms + 1)  # strictly increasing
        return self._video.detect_for_video(image, self._last_ms)

    def faces(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Boxes (x0, y0, x1, y1) of every face in one frame."""
        height, width = rgb.shape[:2]
        boxes = []
        for face in self._detect(rgb, still=True).face_landmarks:
            points = np.array([(p.x * width, p.y * height) for p in face])
            boxes.append(np.concatenate([points.min(0), points.max(0)]))
        return boxes

    def track(self, rgb: np.ndarray) -> FaceObservation:
        """One RGB uint8 frame (H, W, 3) -> the main face's landmarks, blendshapes and matrix."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:  # the Landmarker stays broken after a frame of another layout
            raise ValueError(f"expected an RGB frame (H, W, 3), got shape {rgb.shape}")
        self._frames += 1
        observation = self._find(rgb)
        if not observation.found and self._video is not None and self._last_box is not None \
                and self._lost_for < REFIND_FRAMES:
            observation = self._refind(rgb, self._last_box)
        if observation.found:
            self._last_box, self._lost_for = observation.box, 0
        else:
            self._lost_for += 1
        return observation

    def _find(self, rgb: np.ndarray) -> FaceObservation:
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
            found = self._track_in(rgb, window, still=True)
            if found.found:
                self._follow(found, width, height)
                return found
        return observation

    def _refind(self, rgb: np.ndarray, box: np.ndarray) -> FaceObservation:
        """The face lost since `box`, looked for in square views around it, each also mirrored (module docstring)."""
        import cv2

        centre, size = (box[:2] + box[2:]) / 2, max(box[2] - box[0], box[3] - box[1])
        for enlarge, equalise in REFIND_VIEWS:
            scale = REFIND_SIZE / (enlarge * size)  # view pixels per frame pixel
            offset = REFIND_SIZE / 2 - scale * centre
            view = cv2.warpAffine(rgb, np.array([[scale, 0, offset[0]], [0, scale, offset[1]]]),
                                  (REFIND_SIZE, REFIND_SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
            if equalise:
                lab = cv2.cvtColor(view, cv2.COLOR_RGB2LAB)
                lab[..., 0] = cv2.createCLAHE(2.0, (4, 4)).apply(lab[..., 0])
                view = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
            for mirrored in (False, True):
                previous, self._previous_centre = self._previous_centre, None  # the view's centre is the face
                found = self._track_in(view[:, ::-1] if mirrored else view, (0, 0, REFIND_SIZE, REFIND_SIZE),
                                       still=True)
                self._previous_centre = previous
                if not found.found:
                    continue
                if mirrored:
                    found = self._unmirrored(found)
                found.landmarks /= scale
                found.landmarks[:, :2] -= offset / scale
                found.box = (found.box - np.tile(offset, 2)) / scale
                self._previous_centre = (found.box[:2] + found.box[2:]) / 2
                return found
        return FaceObservation.none()

    def _unmirrored(self, seen: FaceObservation) -> FaceObservation:
        """A face read in a mirrored REFIND_SIZE view, as the view itself shows it: each landmark takes its mirror
        partner's place, left and right blendshapes swap, the head's matrix is reflected back."""
        if self._mirror is None:
            from serep_engine.facemodel.ict import ICTModel

            self._mirror = mediapipe_mirror(ICTModel.load())
        landmarks = seen.landmarks[self._mirror]
        landmarks[:, 0] = REFIND_SIZE - landmarks[:, 0]  # mediapipe's x: pixel edges at whole numbers
        box = np.array([REFIND_SIZE - seen.box[2], seen.box[1], REFIND_SIZE - seen.box[0], seen.box[3]])
        reflect = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)
        return FaceObservation(True, landmarks, box, seen.blendshapes[BLENDSHAPE_MIRROR],
                               reflect @ seen.matrix @ reflect)

    def _track_in(self, rgb: np.ndarray, window: tuple[int, int, int, int], still: bool = False) -> FaceObservation:
        """The main face in one window (x0, y0, x1, y1) of the frame, in the frame's pixels. In VIDEO mode the
        Landmarker follows one face; where that is not the main track's (a face found anew, or one away from the
        previous frame's), the view is read again in IMAGE mode with every face, and the main-track rule picks."""
        x0, y0, x1, y1 = window
        view = rgb[y0:y1, x0:x1]
        result = self._detect(view, still)
        if not result.face_landmarks:
            return FaceObservation.none()
        main = self._main_face(result, window)
        if not still and self._video is not None and not self._near_previous(main.box):
            main = self._main_face(self._detect(view, still=True), window) or main
        self._previous_centre = (main.box[:2] + main.box[2:]) / 2
        return main

    def _near_previous(self, box: np.ndarray) -> bool:
        if self._previous_centre is None:
            return False
        return np.linalg.norm((box[:2] + box[2:]) / 2 - self._previous_centre) < max(box[2] - box[0], box[3] - box[1])

    def _main_face(self, result, window: tuple[int, int, int, int]) -> FaceObservation | None:
        """The face nearest to the previous frame's, else the largest, of a Landmarker result on `window`."""
        if not result.face_landmarks:
            return None
        x0, y0, x1, y1 = window
        width, height = x1 - x0, y1 - y0
        faces = [np.array([(p.x * width + x0, p.y * height + y0, p.z * width) for p in face], np.float32)
                 for face in result.face_landmarks]
        boxes = [np.concatenate([f[:, :2].min(0), f[:, :2].max(0)]) for f in faces]
        if self._previous_centre is not None and len(faces) > 1:
            distances = [np.linalg.norm((b[:2] + b[2:]) / 2 - self._previous_centre) for b in boxes]
            main = int(np.argmin(distances))
        else:
            main = int(np.argmax([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
        blendshapes = np.array([c.score for c in result.face_blendshapes[main]], np.float32)
        matrix = np.asarray(result.facial_transformation_matrixes[main], np.float32)
        return FaceObservation(True, faces[main], boxes[main], blendshapes, matrix)

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


def mediapipe_mirror(face_model, render_size: int = 512) -> np.ndarray:
    """(478,) the mirror partner of each mediapipe landmark (the same points on a face seen in a mirror): the
    template rendered head-on is symmetric about the image's centre column, so each landmark is paired with the
    landmark nearest its reflection. Cached on disk (it depends only on mediapipe's version)."""
    from importlib.metadata import version

    from serep_engine.cache import cached_array
    from serep_engine.paths import cache_dir

    return cached_array(cache_dir() / f"mediapipe{version('mediapipe')}_mirror.npy",
                        lambda: _mirror_pairing(face_model, render_size)).astype(np.int64)


def _mirror_pairing(face_model, render_size: int) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    from serep_engine.render.head import Appearance, Camera, HeadRenderer

    renderer = HeadRenderer(face_model, render_size, painted=False)  # the pairing in use was made unpainted
    image, mask = renderer.render(face_model.neutral, Camera(render_size, focal=1800.0, distance=90.0), Appearance())
    with FaceTracker(video=False, max_faces=1) as tracker:
        observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
    if not observation.found:
        raise RuntimeError("mediapipe found no face on the rendered template")
    points = observation.landmarks[:, :2]
    reflected = points * [-1.0, 1.0] + [render_size - 1.0, 0.0]
    _, partner = linear_sum_assignment(np.linalg.norm(reflected[:, None] - points[None], axis=2))
    return checked_pairing(partner, "mediapipe")


def checked_pairing(partner: np.ndarray, what: str) -> np.ndarray:
    if not np.array_equal(partner[partner], np.arange(len(partner))):
        raise RuntimeError(f"the {what} landmark mirror is not a pairing")
    return partner.astype(np.int64)


@contextmanager
def _quiet_native_logs():
    """mediapipe's C++ start-up notices ("Created TensorFlow Lite XNNPACK delegate", ...) go to file descriptor 2
    and no setting silences them: the descriptor points at the null device while a landmarker starts."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _search_windows(width: int, height: int):
    """Square windows of the frame's short side, then of half of it, overlapping by half."""
    short = min(width, height)
    for side in (short, short // 2):
        step = side // 2
        for y0 in sorted({*range(0, height - side + 1, step), height - side}):
            for x0 in sorted({*range(0, width - side + 1, step), width - side}):
                yield x0, y0, x0 + side, y0 + side
