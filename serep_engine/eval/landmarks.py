"""`serep eval landmarks`: a result's 68 landmarks (`landmarks2d`) on real annotated photos.

Each photo is cropped as the front end crops video (mediapipe's five points; a fixed centre crop where
mediapipe finds no face). The 68 points are read off mediapipe's 478 by the fitted map (capture/landmarks68.py),
or, where mediapipe finds no face, predicted in the crop by the capture model's landmark head H_lmks; both are
mapped back to the photo. H_lmks is also scored on every photo alone (`landmark_head_nme`). NME: mean
point-to-point distance over the 51 inner points (17-67) divided by the distance of the outer eye corners (36, 45),
as a fraction (0.05 = 5%).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from serep_engine.capture.real import crop_photo, read_landmark_photos
from serep_engine.capture.metrics import nme_inner51
from serep_engine.track.crop import invert_transform


def evaluate_landmarks(capture_model, directory: str | Path, landmark_map=None) -> dict:
    from serep_engine.capture.landmarks68 import LandmarkMap
    from serep_engine.track.crop import transform_points
    from serep_engine.track.tracking import FaceTracker

    photos = read_landmark_photos(directory)
    if not photos:
        raise ValueError(f"no annotated photos in {directory}")
    landmark_map = landmark_map or LandmarkMap.from_pretrained()
    predicted, head, truth, missed = [], [], [], 0
    with FaceTracker(video=False, max_faces=1) as tracker:
        for path, landmarks in photos:
            image = cv2.imread(str(path))
            if image is None:
                raise ValueError(f"cannot read the photo {path}")
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            crop, transform, points, found = crop_photo(rgb, tracker, capture_model.crop_size)
            missed += not found
            _, crop_points = capture_model.predict([crop], [points])
            head.append(transform_points(crop_points[0], invert_transform(transform)))
            predicted.append(transform_points(landmark_map(points), invert_transform(transform)) if found else head[-1])
            truth.append(landmarks)
    nme = nme_inner51(np.stack(predicted), np.stack(truth))
    return {"nme_inner51": round(float(nme.mean()), 5), "n_images": len(photos),
            "nme_median": round(float(np.median(nme)), 5), "mediapipe_missed": missed,
            "landmark_head_nme": round(float(nme_inner51(np.stack(head), np.stack(truth)).mean()), 5)}
