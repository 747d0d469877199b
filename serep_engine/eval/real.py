"""`serep eval real`: capture methods judged on real faces (issue 17): the photos and clips parts (the takes part is
eval/takes.py).

Photos: human-annotated 68-point photos (a faces68-style folder: images + landmarks68.json), those whose head
turns less than MAX_YAW_DEG by mediapipe's Face Landmarker (Tasks API, the bundle in the data folder: its facial
transformation matrix). Per photo, five expression measures from the annotation, normalised by the outer eye
corners (36-45): lip gap (mean of the inner-lip pairs 61-67, 62-66, 63-65), left and right eye opening (the
subject's left eye is 42-47: mean of 43-47 and 44-46 over 42-45; the right eye 36-41 likewise), mouth width (48-54)
and brow height (the brows' mean height above the eyes' mean height, along the face's up). The same five from each
method's *decoded expression mesh*: its expression decoded on the template, frontal, at the template's 68 landmark
vertices (so they read the code, not the image). Per measure: Pearson correlation and spread ratio (std of the
method's values / std of the annotation's) over the photos.

Clips (real video, no annotation; the first MAX_CLIP_FRAMES frames of each): the Face Landmarker in VIDEO mode
gives 478 points, blendshape scores and the head pose; its points are put in the face's own frame (each frame's
3-D points aligned rigidly, with scale, on the clip's most frontal frame by the forehead, nose and face outline,
so that a turning head does not read as a wink) and the same five measures are read off them (mediapipe's indices
for the same lid, lip and brow points). Each as a change from the clip's median, against the method's decoded
mesh likewise: per measure the correlation and the slope (least squares, captured change on observed change), the
mean over clips. Winks: frames where mediapipe's eyeBlinkLeft and eyeBlinkRight differ by more than WINK; the
fraction where the method's left-right eye-opening difference has the same sign, and the ratio of its
|eyeBlinkLeft - eyeBlinkRight| (ARKit weights solved from its decoded mesh) to mediapipe's.

Methods: `neutral` (the zero expression), `landmark_fit` and `serep` (eval/baselines.py, as on SynthREX) and
`mediapipe_blendshapes` (the Landmarker's 52 scores applied to ICT's ARKit shapes on the template, encoded by
E_exp and decoded: what mediapipe-to-Live-Link bridges give animators today).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from serep_engine.capture.real import read_landmark_photos
from serep_engine.expression.model import ExpressionModel
from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import data_dir
from serep_engine.track.tracking import BLENDSHAPE_NAMES, FaceTracker

MAX_YAW_DEG = 35.0
MAX_CLIP_FRAMES = 150
WINK = 0.3
# mediapipe face mesh indices of the points the measures use (subject's left eye: 263 outer, 362 inner)
MP_LIPS = ((82, 87), (13, 14), (312, 317))
MP_EYE_LEFT, MP_EYE_RIGHT = ((385, 380), (386, 374), (362, 263)), ((158, 153), (159, 145), (133, 33))
MP_MOUTH = (61, 291)
MP_BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
MP_EYES = (33, 133, 159, 145, 263, 362, 386, 374)
MP_RIGID = (1, 4, 5, 6, 10, 21, 54, 93, 103, 127, 132, 151, 168, 195, 197, 234, 251, 284, 323, 332, 356, 361, 454)
MEASURES = ("lip_gap", "eye_left", "eye_right", "mouth_width", "brow_height")
METHODS = ("neutral", "landmark_fit", "mediapipe_blendshapes", "serep", "serep_network")


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


def scores_of(observation) -> dict[str, float]:
    """{ARKit name: score} of a tracker observation's blendshapes (`_neutral` left out)."""
    return {name: float(score) for name, score in zip(BLENDSHAPE_NAMES, observation.blendshapes) if name != "_neutral"}


def yaw_of(observation) -> float:
    """The head's yaw in degrees, from the Landmarker's facial transformation matrix."""
    from serep_engine.retarget.arkit import head_yaw

    return float(head_yaw(observation.matrix[None])[0])


def blendshape_meshes(face_model: ICTModel, model, scores: list[dict[str, float]],
                      neutral: np.ndarray | None = None) -> np.ndarray:
    """(N, 9409, 3) meshes of mediapipe's scores: ICT's ARKit shapes blended on the template, encoded by the
    expression model `model` and decoded onto `neutral` (default: the template)."""
    import torch

    from serep_engine.contract.arkit import ARKIT_NAMES
    from serep_engine.retarget.arkit import arkit_shapes

    shapes = arkit_shapes(face_model, face_model.face_expression_basis)  # (52, V, 3)
    weights = np.array([[s.get(name, 0.0) for name in ARKIT_NAMES] for s in scores], np.float32)
    with torch.no_grad():
        basis = model.identity_basis(face_model.face_neutral)
        codes = model.encode_displacements(torch.from_numpy(np.tensordot(weights, shapes, axes=1)), basis)
        if neutral is None:
            return face_model.face_neutral[None] + model.decode_with_basis(codes, basis).numpy()
        return neutral[None] + model.decode_with_basis(codes, model.identity_basis(neutral)).numpy()


def evaluate_photos(face_model: ICTModel, methods: list[str], directory: str | Path | None = None,
                    log=None) -> dict[str, dict]:
    """{method: {"n": N, measure: {"corr", "spread"}, ...}} on the frontal annotated photos of `directory`."""
    from serep_engine.eval.baselines import METHODS as SYNTHREX_METHODS

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    try:
        photos = read_landmark_photos(directory or default_photos())
    except FileNotFoundError:  # no landmarks68.json: no usable photo
        photos = []
    kept, scores = [], []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for path, points in photos:
            image = cv2.imread(str(path))
            if image is None:
                continue
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            seen = tracker.track(rgb)
            if seen.found and abs(yaw_of(seen)) < MAX_YAW_DEG:
                kept.append((rgb, points))
                scores.append(scores_of(seen))
    if log:
        log(f"photos: {len(kept)} of {len(photos)} with a face turned less than {MAX_YAW_DEG:g} degrees")
    if not kept:
        return {m: {"n": 0} for m in methods}
    truth = [expression_measures(points, image_up(points)) for _, points in kept]
    template_up = np.array([0.0, 1.0])  # ICT's frame: y up, facing +z
    out = {}
    for name in methods:
        if name == "mediapipe_blendshapes":
            meshes = blendshape_meshes(face_model, ExpressionModel.from_pretrained("cpu", face_model), scores)
        else:
            method = SYNTHREX_METHODS[name](face_model)
            meshes = np.concatenate([method(rgb[None], face_model.face_neutral) for rgb, _ in kept])
        captured = [expression_measures(mesh[face_model.landmarks68, :2], template_up) for mesh in meshes]
        out[name] = {"n": len(kept), **compare(captured, truth)}
        if log:
            log(f"{name}: {out[name]}")
    return out


def default_clips() -> Path:
    return data_dir() / "real" / "videos"


def mediapipe_measures(points: np.ndarray) -> dict[str, float]:
    """The five measures from mediapipe's 478 points in the face's frame (2-D, y up)."""
    p = np.asarray(points, np.float64)[:, :2]
    scale = np.linalg.norm(p[263] - p[33])

    def opening(eye):
        (a, b), (c, d), (inner, outer) = eye
        return (np.linalg.norm(p[a] - p[b]) + np.linalg.norm(p[c] - p[d])) / 2 / np.linalg.norm(p[inner] - p[outer])

    return {"lip_gap": float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in MP_LIPS])) / scale,
            "eye_left": float(opening(MP_EYE_LEFT)), "eye_right": float(opening(MP_EYE_RIGHT)),
            "mouth_width": float(np.linalg.norm(p[MP_MOUTH[0]] - p[MP_MOUTH[1]])) / scale,
            "brow_height": float(p[list(MP_BROWS), 1].mean() - p[list(MP_EYES), 1].mean()) / scale}


def _align(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`points` (478, 3) moved by the similarity that best puts their rigid points on the reference's."""
    rigid = list(MP_RIGID)
    a, b = points[rigid], reference[rigid]
    ca, cb = a.mean(0), b.mean(0)
    u, s, vt = np.linalg.svd((a - ca).T @ (b - cb))
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ flip @ vt
    scale = (s * np.diag(flip)).sum() / ((a - ca) ** 2).sum()
    return (points - ca) @ rotation * scale + cb


def track_clip(path: Path, frames: int) -> dict:
    """The first `frames` RGB frames of a clip with the Landmarker's points (face frame), blendshapes, yaw."""
    from serep_engine.track.video import probe, read_frames

    info = probe(path)
    rgbs, points, scores, blinks, yaws = [], [], [], [], []
    with FaceTracker(video=True, max_faces=1, fps=info.fps) as tracker:
        for _, rgb in read_frames(info, 0, frames):
            seen = tracker.track(rgb)
            if not seen.found:
                continue
            # pixels, y up, depth toward the viewer: a right-handed frame for the rigid alignment
            points.append(seen.landmarks * [1.0, -1.0, -1.0])
            scores.append(scores_of(seen))
            blinks.append((scores[-1]["eyeBlinkLeft"], scores[-1]["eyeBlinkRight"]))
            yaws.append(abs(yaw_of(seen)))
            rgbs.append(rgb)
    if not points:
        return {"frames": np.zeros((0,)), "measures": [], "scores": [], "blinks": np.zeros((0, 2))}
    reference = points[int(np.argmin(yaws))]
    return {"frames": np.stack(rgbs), "measures": [mediapipe_measures(_align(p, reference)) for p in points],
            "scores": scores, "blinks": np.array(blinks)}


def _changes(measures: list[dict]) -> dict[str, np.ndarray]:
    return {name: (v := np.array([m[name] for m in measures])) - np.median(v) for name in MEASURES}


def evaluate_clips(face_model: ICTModel, methods: list[str], directory: str | Path | None = None,
                   frames: int = MAX_CLIP_FRAMES, log=None) -> dict[str, dict]:
    """{method: {"n": clips, measure: {"corr", "slope"} (means over clips), "winks": {...}}} on real clips."""
    from serep_engine.contract import VIDEO_SUFFIXES
    from serep_engine.eval.baselines import METHODS as SYNTHREX_METHODS
    from serep_engine.retarget.arkit import ARKitSolver

    directory = Path(directory or default_clips())
    clips = sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES) if directory.is_dir() else []
    solver = ARKitSolver(face_model, face_model.face_neutral)
    left, right = solver.names.index("eyeBlinkLeft"), solver.names.index("eyeBlinkRight")
    made = {name: SYNTHREX_METHODS[name](face_model) for name in methods if name in SYNTHREX_METHODS}
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)  # once, not per clip
    per_clip = {name: [] for name in methods}
    winks = {name: {"frames": 0, "same": 0, "ratios": []} for name in methods}
    for clip in clips:
        tracked = track_clip(clip, frames)
        if len(tracked["measures"]) < 10:
            continue
        observed = _changes(tracked["measures"])
        wink = np.abs(tracked["blinks"][:, 0] - tracked["blinks"][:, 1]) > WINK
        for name in methods:
            if name == "mediapipe_blendshapes":
                meshes = blendshape_meshes(face_model, expression_model, tracked["scores"])
            else:
                meshes = made[name](tracked["frames"], face_model.face_neutral)
            captured = _changes([expression_measures(m[face_model.landmarks68, :2], np.array([0.0, 1.0]))
                                 for m in meshes])
            row = {}
            for measure in MEASURES:
                a, b = captured[measure], observed[measure]
                row[measure] = (float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-12 and b.std() > 1e-12 else np.nan,
                                float(a @ b / (b @ b)) if b @ b > 0 else np.nan)
            per_clip[name].append(row)
            if wink.any():
                weights = solver.solve(meshes[wink] - face_model.face_neutral)
                theirs = tracked["blinks"][wink, 0] - tracked["blinks"][wink, 1]
                ours_open = captured["eye_right"][wink] - captured["eye_left"][wink]  # left closing: > 0
                winks[name]["frames"] += int(wink.sum())
                winks[name]["same"] += int((np.sign(ours_open) == np.sign(theirs)).sum())
                winks[name]["ratios"] += list(np.abs(weights[:, left] - weights[:, right]) / np.abs(theirs))
        if log:
            log(f"{clip.name}: {len(tracked['measures'])} frames with a face, {int(wink.sum())} wink frames")
    out = {}
    for name in methods:
        rows = per_clip[name]
        result = {"n": len(rows)}
        for measure in MEASURES:
            corr = [r[measure][0] for r in rows if np.isfinite(r[measure][0])]
            slope = [r[measure][1] for r in rows if np.isfinite(r[measure][1])]
            result[measure] = {"corr": round(float(np.mean(corr)), 4) if corr else None,
                               "slope": round(float(np.mean(slope)), 4) if slope else None}
        w = winks[name]
        result["winks"] = {"frames": w["frames"],
                           "same_side": round(w["same"] / w["frames"], 4) if w["frames"] else None,
                           "magnitude": round(float(np.mean(w["ratios"])), 4) if w["ratios"] else None}
        out[name] = result
    return out
