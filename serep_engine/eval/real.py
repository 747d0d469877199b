"""`serep eval real`: capture methods judged on real faces (issue 17). This module holds the photos part; the clips
and takes parts are not built yet (the command says so in its output rather than reporting them empty).

Photos: human-annotated 68-point photos (a faces68-style folder: images + landmarks68.json), those whose head
turns less than MAX_YAW_DEG by mediapipe's Face Landmarker (Tasks API, the bundle in the data folder: its facial
transformation matrix). Per photo, five expression measures from the annotation, normalised by the outer eye
corners (36-45): lip gap (mean of the inner-lip pairs 61-67, 62-66, 63-65), left and right eye opening (the
subject's left eye is 42-47: mean of 43-47 and 44-46 over 42-45; the right eye 36-41 likewise), mouth width (48-54)
and brow height (the brows' mean height above the eyes' mean height, along the face's up). The same five from each
method's *decoded expression mesh*: its expression decoded on the template, frontal, at the template's 68 landmark
vertices (so they read the code, not the image). Per measure: Pearson correlation and spread ratio (std of the
method's values / std of the annotation's) over the photos.

Methods: `neutral` (the zero expression), `landmark_fit` and `serep` (eval/baselines.py, as on SynthREX) and
`mediapipe_blendshapes` (the Landmarker's 52 scores applied to ICT's ARKit shapes on the template, encoded by
E_exp and decoded: what mediapipe-to-Live-Link bridges give animators today).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from serep_engine.capture.real import read_landmark_photos
from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import data_dir

MAX_YAW_DEG = 35.0
MEASURES = ("lip_gap", "eye_left", "eye_right", "mouth_width", "brow_height")
METHODS = ("neutral", "landmark_fit", "mediapipe_blendshapes", "serep")


def default_photos() -> Path:
    return data_dir() / "real" / "faces68" / "afw"


def expression_measures(points: np.ndarray, up: np.ndarray) -> dict[str, float]:
    """The five measures of 68 points (2-D; `up`, a unit 2-vector, is the face's up in their frame)."""
    p = np.asarray(points, np.float64)[:, :2]
    scale = np.linalg.norm(p[45] - p[36])

    def gap(pairs):
        return float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in pairs]))

    return {"lip_gap": gap([(61, 67), (62, 66), (63, 65)]) / scale,
            "eye_left": gap([(43, 47), (44, 46)]) / np.linalg.norm(p[45] - p[42]),
            "eye_right": gap([(37, 41), (38, 40)]) / np.linalg.norm(p[39] - p[36]),
            "mouth_width": float(np.linalg.norm(p[54] - p[48])) / scale,
            "brow_height": float((p[17:27].mean(0) - p[36:48].mean(0)) @ up) / scale}


def image_up(points: np.ndarray) -> np.ndarray:
    """The face's up in an image (y down): perpendicular to the eye line, toward the brows."""
    eye_line = points[45] - points[36]
    up = np.array([eye_line[1], -eye_line[0]]) / np.linalg.norm(eye_line)
    return up if (points[17:27].mean(0) - points[36:48].mean(0)) @ up > 0 else -up


def compare(captured: list[dict], truth: list[dict]) -> dict:
    """Per measure: Pearson correlation (None when either side does not vary) and spread ratio."""
    out = {}
    for name in MEASURES:
        a = np.array([c[name] for c in captured])
        b = np.array([t[name] for t in truth])
        corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-12 and b.std() > 1e-12 else None
        out[name] = {"corr": None if corr is None else round(corr, 4),
                     "spread": round(float(a.std() / b.std()), 4) if b.std() > 0 else None}
    return out


class Landmarker:
    """mediapipe's Face Landmarker (Tasks API) on photos: blendshape scores and the head's yaw."""

    def __init__(self):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        model = data_dir() / "mediapipe" / "face_landmarker.task"
        options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                               running_mode=vision.RunningMode.IMAGE, num_faces=1,
                                               output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._image = lambda rgb: mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))

    def __call__(self, rgb: np.ndarray) -> tuple[dict[str, float], float] | None:
        """({ARKit name: score}, yaw in degrees), or None without a face."""
        result = self._landmarker.detect(self._image(rgb))
        if not result.face_landmarks:
            return None
        scores = {c.category_name: float(c.score) for c in result.face_blendshapes[0] if c.category_name != "_neutral"}
        rotation = np.asarray(result.facial_transformation_matrixes[0])[:3, :3]
        return scores, float(np.degrees(np.arctan2(rotation[0, 2], rotation[2, 2])))

    def close(self) -> None:
        self._landmarker.close()


def blendshape_meshes(face_model: ICTModel, scores: list[dict[str, float]]) -> np.ndarray:
    """(N, 9409, 3) template meshes of mediapipe's scores: ICT's ARKit shapes blended, encoded, decoded."""
    import torch

    from serep_engine.contract.arkit import ARKIT_NAMES
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.retarget.arkit import arkit_shapes

    model = ExpressionModel.from_pretrained("cpu", face_model)
    shapes = arkit_shapes(face_model, face_model.face_expression_basis)  # (52, V, 3)
    weights = np.array([[s.get(name, 0.0) for name in ARKIT_NAMES] for s in scores], np.float32)
    with torch.no_grad():
        basis = model.identity_basis(face_model.face_neutral)
        codes = model.encode_displacements(torch.from_numpy(np.tensordot(weights, shapes, axes=1)), basis)
        return face_model.face_neutral[None] + model.decode_with_basis(codes, basis).numpy()


def evaluate_photos(face_model: ICTModel, methods: list[str], directory: str | Path | None = None,
                    log=None) -> dict[str, dict]:
    """{method: {"n": N, measure: {"corr", "spread"}, ...}} on the frontal annotated photos of `directory`."""
    from serep_engine.eval.baselines import METHODS as SYNTHREX_METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    photos = read_landmark_photos(directory or default_photos())
    landmarker = Landmarker()
    kept, scores = [], []
    try:
        for path, points in photos:
            image = cv2.imread(str(path))
            if image is None:
                continue
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            seen = landmarker(rgb)
            if seen is not None and abs(seen[1]) < MAX_YAW_DEG:
                kept.append((rgb, points))
                scores.append(seen[0])
    finally:
        landmarker.close()
    if log:
        log(f"photos: {len(kept)} of {len(photos)} with a face turned less than {MAX_YAW_DEG:g} degrees")
    if not kept:
        return {m: {"n": 0} for m in methods}
    truth = [expression_measures(points, image_up(points)) for _, points in kept]
    template_up = np.array([0.0, 1.0])  # ICT's frame: y up, facing +z
    out = {}
    for name in methods:
        if name == "mediapipe_blendshapes":
            meshes = blendshape_meshes(face_model, scores)
        else:
            method = SYNTHREX_METHODS[name](face_model)
            meshes = np.concatenate([method(rgb[None], face_model.face_neutral) for rgb, _ in kept])
        captured = [expression_measures(mesh[face_model.landmarks68, :2], template_up) for mesh in meshes]
        out[name] = {"n": len(kept), **compare(captured, truth)}
        if log:
            log(f"{name}: {out[name]}")
    return out
