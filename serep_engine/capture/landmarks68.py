"""The 68 iBUG landmarks of a result (`landmarks2d`), read off mediapipe's 478 points.

Each of the 68 is an affine combination (weights summing to one) of the K mediapipe points nearest to it on the
template, fitted by ridge regression on annotated photos (HELEN-train: `serep train landmark-map`). Weights that
sum to one make the map commute with any similarity or affine change of the image, so it reads image pixels and
crop pixels alike. mediapipe's mesh and the iBUG convention place the jaw line, the brows and the lip corners
differently; the fitted combination learns where the annotators put them. On AFW (never fitted on) its NME is
0.039, where the capture network's landmark head H_lmks reads 0.047 on the Face Landmarker's points and the
nearest template vertices 0.062 (`serep eval landmarks`). H_lmks stays a training task of the capture model and
reads the photos where mediapipe finds no face.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serep_engine.facemodel.ict import ICTModel
from serep_engine.track.correspondence import mediapipe_by_distance_to_68

MAP_NAME = "landmarks68_map.npz"
NEIGHBOURS = (8, 16, 32)  # K tried by the cross-validation
RIDGES = (10.0, 100.0, 1000.0)  # ridge weights tried (crop pixels squared: a 256 px crop)
FOLDS = 5


@dataclass(frozen=True)
class LandmarkMap:
    neighbours: np.ndarray  # (68, K) mediapipe landmark indices
    weights: np.ndarray  # (68, K), each row summing to one

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(..., 478, >=2) mediapipe points -> (..., 68, 2) iBUG points, in the same pixels."""
        points = np.asarray(points, np.float64)[..., :2]
        return np.einsum("...lkc,lk->...lc", points[..., self.neighbours, :], self.weights).astype(np.float32)

    def save(self, path: str | Path, summary: dict) -> None:
        np.savez(path, neighbours=self.neighbours.astype(np.int16), weights=self.weights.astype(np.float32),
                 summary=json.dumps(summary))

    @classmethod
    def load(cls, path: str | Path) -> LandmarkMap:
        with np.load(path) as data:
            return cls(data["neighbours"].astype(np.intp), data["weights"].astype(np.float64))

    @classmethod
    def from_pretrained(cls) -> LandmarkMap:
        from serep_engine.paths import weights_dir

        return cls.load(weights_dir() / MAP_NAME)


def fit_map(points: np.ndarray, truth: np.ndarray, order: np.ndarray, neighbours: int, ridge: float) -> LandmarkMap:
    """points (N, 478, 2) mediapipe, truth (N, 68, 2) annotated, both in the same pixels: per iBUG point, the
    affine weights of its `neighbours` nearest mediapipe points, ridge-pulled toward the nearest point alone."""
    chosen = order[:, :neighbours]
    weights = np.zeros((68, neighbours))
    prior = np.zeros(neighbours)
    prior[0] = 1.0
    ones = np.ones(neighbours)
    for i in range(68):
        x = np.concatenate([points[:, chosen[i], 0], points[:, chosen[i], 1]])  # x and y share the weights
        y = np.concatenate([truth[:, i, 0], truth[:, i, 1]])
        system = x.T @ x + ridge * np.eye(neighbours)
        free, along = np.linalg.solve(system, np.c_[x.T @ y + ridge * prior, ones]).T
        weights[i] = free - (free.sum() - 1.0) / along.sum() * along  # the weights summing to one (Lagrange)
    return LandmarkMap(chosen, weights)


def fit_landmark_map(face_model: ICTModel, points: np.ndarray, truth: np.ndarray,
                     log=None) -> tuple[LandmarkMap, dict]:
    """The map with K and the ridge chosen by FOLDS-fold cross-validation on these photos; (map, summary)."""
    from serep_engine.capture.metrics import nme_inner51

    order = mediapipe_by_distance_to_68(face_model)
    folds = np.arange(len(points)) % FOLDS
    scores = {}
    for neighbours in NEIGHBOURS:
        for ridge in RIDGES:
            errors = []
            for fold in range(FOLDS):
                fitted = fit_map(points[folds != fold], truth[folds != fold], order, neighbours, ridge)
                errors.append(nme_inner51(fitted(points[folds == fold]), truth[folds == fold]))
            scores[(neighbours, ridge)] = float(np.concatenate(errors).mean())
            if log is not None:
                log(json.dumps({"type": "progress", "stage": "landmark map", "neighbours": neighbours,
                                "ridge": ridge, "cv_nme": round(scores[(neighbours, ridge)], 5)}))
    neighbours, ridge = min(scores, key=scores.get)
    summary = {"photos": len(points), "neighbours": neighbours, "ridge": ridge,
               "cv_nme_inner51": round(scores[(neighbours, ridge)], 5),
               "cv": [{"neighbours": k, "ridge": r, "nme": round(v, 5)} for (k, r), v in scores.items()]}
    return fit_map(points, truth, order, neighbours, ridge), summary


def photo_points(directory: str | Path, crop_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """mediapipe's points (N, 478, 2) and the annotated 68 (N, 68, 2) of the photos of a faces68-style folder
    where mediapipe finds a face, in the front end's crop pixels (so the ridge means the same on every photo)."""
    import cv2

    from serep_engine.capture.real import crop_photo, read_landmark_photos
    from serep_engine.track.crop import transform_points
    from serep_engine.track.tracking import FaceTracker

    points, truth = [], []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for path, annotated in read_landmark_photos(directory):
            image = cv2.imread(str(path))
            if image is None:
                raise ValueError(f"cannot read the photo {path}")
            _, transform, found_points, found = crop_photo(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), tracker, crop_size)
            if found:
                points.append(found_points)
                truth.append(transform_points(annotated, transform))
    if not points:
        raise ValueError(f"mediapipe found no face in the photos of {directory}")
    return np.stack(points).astype(np.float64), np.stack(truth).astype(np.float64)
