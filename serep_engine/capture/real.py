"""Real images for the capture model: landmark supervision and the real side of the domain loss.

- Photos with 68 annotated landmarks (`faces68/<set>/`: images + `landmarks68.json`), cropped exactly as
  the front end crops video: mediapipe's five points, or, where mediapipe finds no face, a fixed crop of
  the photo's centre (the photos are cut around one face); `faces68/afw` is the landmark benchmark and
  never trained on.
- Frames of the real clips with mediapipe's landmarks as pseudo-labels: the 68 iBUG points are read off
  mediapipe's mesh through the template (`mediapipe_to_68`).
Built once into `$SEREP_CACHE/capture-real-v2/` as frame packs (JPEG crops + arrays).

`build_pseudo_code_set`: real crops with *expression* pseudo-labels, the codes the landmark refinement
(capture/refine.py) reads from mediapipe's points with a capture model's codes as the prior. The network reads real
faces at a third of their motion and the refinement at nearly all of it; training on these teaches the image path
the refinement's strength on real faces (issue 17). Only PSEUDO_CODE_CLIPS and the training photos are used: the
other clips, AFW and the takes stay held out for `serep eval real`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import cache_dir, data_dir
from serep_engine.synth.shards import load_frames, save_frames
from serep_engine.track.crop import CANONICAL_POINTS, crop_face, similarity_to_crop, transform_points

VERSION = "capture-real-v2"  # v2: pseudo-labels from the Tasks Face Landmarker
TRAIN_PHOTOS = ("helen_train",)
FRAMES_PER_CLIP = 120
PSEUDO_LABEL_WEIGHT = 0.5  # pseudo-labels count less than annotations; the jaw contour (0-16) not at all
PSEUDO_CODE_VERSION = "capture-pseudo-codes-v2"  # v2: labels with the eyelid depth prior
# the real clips whose frames get code pseudo-labels (the longer half); the rest are held out for `serep eval real`
PSEUDO_CODE_CLIPS = ("WDA_AlexandriaOcasioCortez_000", "WDA_KatieHill_000", "liveportrait_d10", "liveportrait_d11",
                     "liveportrait_d12", "liveportrait_d13", "liveportrait_d14", "liveportrait_d18", "liveportrait_d19",
                     "liveportrait_d9", "skarsgard", "videoretalking_4")


def read_landmark_photos(directory: str | Path) -> list[tuple[Path, np.ndarray]]:
    """(image path, (68, 2) pixel landmarks) for every annotated photo of a faces68-style folder."""
    directory = Path(directory)
    index = directory / "landmarks68.json"
    if not index.exists():
        raise FileNotFoundError(f"{directory} has no landmarks68.json")
    points = json.loads(index.read_text())["points"]
    photos = []
    for name, landmarks in sorted(points.items()):
        landmarks = np.asarray(landmarks, np.float64)
        if (directory / name).exists() and landmarks.shape == (68, 2):
            photos.append((directory / name, landmarks))
    return photos


def mediapipe_to_68(face_model: ICTModel) -> np.ndarray:
    """(68,) mediapipe landmark index nearest (on the template) to each of the 68 iBUG landmarks."""
    from serep_engine.track.correspondence import mediapipe_by_distance_to_68

    return mediapipe_by_distance_to_68(face_model)[:, 0]


def fallback_transform(image_shape: tuple[int, ...], crop_size: int) -> np.ndarray:
    """Where mediapipe finds no face in a photo cut around one face: the canonical points on its centre."""
    height, width = image_shape[:2]
    side = 0.62 * min(height, width)
    points = (CANONICAL_POINTS - 0.5) * side + [width / 2, height / 2]
    return similarity_to_crop(points, crop_size)


def crop_photo(rgb: np.ndarray, tracker, crop_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(crop, 2x3 transform, (478, 2) crop-pixel mediapipe landmarks or NaN, found) for one photo."""
    from serep_engine.track.frontend import five_points_from_mediapipe

    observation = tracker.track(rgb)
    if observation.found:
        transform = similarity_to_crop(five_points_from_mediapipe(observation.landmarks), crop_size)
        landmarks = transform_points(observation.landmarks[:, :2], transform)
    else:
        transform = fallback_transform(rgb.shape, crop_size)
        landmarks = np.full((478, 2), np.nan)
    return crop_face(rgb, transform, crop_size), transform, landmarks.astype(np.float32), observation.found


def build_real_set(face_model: ICTModel, crop_size: int = 256, max_photos: int = 0, max_clips: int = 0,
                   log=print) -> Path:
    """The cached real training set (photos + clip frames; 0 = all of them); built on first use."""
    from serep_engine.track.frontend import front_end
    from serep_engine.track.tracking import FaceTracker
    from serep_engine.track.video import probe

    limits = f"_{max_photos}photos_{max_clips}clips" if max_photos or max_clips else ""
    path = cache_dir() / VERSION / f"real_{crop_size}{limits}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data_dir() / "real"
    crops, mediapipe, landmarks, weights = [], [], [], []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for name in TRAIN_PHOTOS:
            for image_path, truth in read_landmark_photos(data / "faces68" / name)[:max_photos or None]:
                rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
                crop, transform, points, _ = crop_photo(rgb, tracker, crop_size)
                crops.append(crop)
                mediapipe.append(points)
                landmarks.append(transform_points(truth, transform))
                weights.append(np.ones(68))
        log(json.dumps({"type": "progress", "stage": "real photos", "n": len(crops)}))
    to_68 = mediapipe_to_68(face_model)
    pseudo_weight = np.full(68, PSEUDO_LABEL_WEIGHT)
    pseudo_weight[:17] = 0.0
    for clip in sorted((data / "videos").glob("*.mp4"))[:max_clips or None]:
        stride = max(probe(clip).frame_count // FRAMES_PER_CLIP, 1)
        for frame in front_end(clip, crop_size=crop_size):
            if frame.found and frame.index % stride == 0:
                crops.append(frame.crop)
                points = frame.crop_landmarks
                mediapipe.append(points)
                landmarks.append(points[to_68])
                weights.append(pseudo_weight)
        log(json.dumps({"type": "progress", "stage": "real clips", "clip": clip.name, "n": len(crops)}))
    save_frames(path, crops, mp_landmarks=np.stack(mediapipe).astype(np.float32),
                landmarks=np.stack(landmarks).astype(np.float32), landmark_weight=np.stack(weights).astype(np.float32))
    return path


def load_real_set(path: Path) -> dict:
    arrays = load_frames(path)
    arrays["crops"] = arrays.pop("frames")
    return arrays


def build_pseudo_code_set(face_model: ICTModel, labeller: Path, crop_size: int = 256, max_photos: int = 0,
                          max_clips: int = 0, log=print) -> Path:
    """The cached set of real crops with code pseudo-labels (module docstring): every frame of PSEUDO_CODE_CLIPS
    (one identity per clip; each clip's labels keep the refinement's motion about the network's own median, so the
    actor's face shape, which the refinement partly reads as a constant expression, is not taught) and the
    training photos (one identity each). `labeller`: the folder of the capture model whose codes are the prior.
    Arrays: crops, mp_landmarks (crop pixels), code."""
    import hashlib

    import torch

    from serep_engine.capture.model import WEIGHTS_NAME, CaptureModel
    from serep_engine.capture.refine import LandmarkRefiner
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.track.frontend import front_end
    from serep_engine.track.tracking import FaceTracker

    limits = f"_{max_photos}photos_{max_clips}clips" if max_photos or max_clips else ""
    model_digest = hashlib.sha1((Path(labeller) / f"{WEIGHTS_NAME}.safetensors").read_bytes()).hexdigest()[:12]
    path = cache_dir() / PSEUDO_CODE_VERSION / f"pseudo_{crop_size}{limits}_{model_digest}.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    capture_model = CaptureModel.load(labeller)
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    with torch.no_grad():
        refiner = LandmarkRefiner(face_model, expression_model.identity_basis(face_model.face_neutral).numpy())
    data = data_dir() / "real"
    crops, mediapipe, codes = [], [], []

    def network_codes(items):
        out = [capture_model.predict([c for c, _ in items[i:i + 64]], [p for _, p in items[i:i + 64]])[0]
               for i in range(0, len(items), 64)]
        return np.concatenate(out)

    clips = [data / "videos" / f"{name}.mp4" for name in PSEUDO_CODE_CLIPS][:max_clips or None]
    for clip in clips:
        frames = [f for f in front_end(clip, crop_size=crop_size) if f.found]
        if len(frames) < 10:
            continue
        prior = network_codes([(f.crop, f.crop_landmarks) for f in frames])
        refined = refiner.refine(np.stack([f.landmarks for f in frames]), prior)
        codes.append(refined - np.median(refined, 0) + np.median(prior, 0))
        crops += [f.crop for f in frames]
        mediapipe += [f.crop_landmarks for f in frames]
        log(json.dumps({"type": "progress", "stage": "pseudo codes", "clip": clip.name, "n": len(crops)}))
    with FaceTracker(video=False, max_faces=1) as tracker:
        for name in TRAIN_PHOTOS:
            for image_path, _ in read_landmark_photos(data / "faces68" / name)[:max_photos or None]:
                rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
                observation = tracker.track(rgb)
                if not observation.found:
                    continue
                crop, _, points, _ = crop_photo(rgb, tracker, crop_size)
                prior = network_codes([(crop, points)])
                codes.append(refiner.refine(observation.landmarks[None], prior, shared_identity=False))
                crops.append(crop)
                mediapipe.append(points)
        log(json.dumps({"type": "progress", "stage": "pseudo codes", "photos": name, "n": len(crops)}))
    save_frames(path, crops, mp_landmarks=np.stack(mediapipe).astype(np.float32),
                code=np.concatenate(codes).astype(np.float32))
    return path
