"""How well mediapipe reads our renders, beside how well it reads real photos (issue 17): the capture follows
mediapipe's points (capture/refine.py), so a render it misreads scores the refinement on mediapipe's error, not ours.

NME (mean point error over the outer eye corners' distance) of mediapipe's face mesh (the front end's tracker) at 12
points with an iBUG-68 equivalent (eye corners, mouth corners, inner lips, nose tip, chin, brows), and the errors of
its lip gap and mid-lid eye openings (over the same distance), medians, on
- AFW photos against their human annotation (frontal ones, |yaw| < 35 deg by the tracker's pose),
- renders of held-out identities with sampled expressions (SynthREX's appearance, camera and degradations), against
  the rendered mesh.

    python benchmarks/mediapipe_on_renders.py [--renders 120] [--photos 200]
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from serep_engine.capture.real import read_landmark_photos
from serep_engine.eval.real import default_photos
from serep_engine.facemodel.expressions import sample_expression
from serep_engine.facemodel.ict import EVAL_SEEDS, FACE_VERTEX_COUNT, ICTModel
from serep_engine.track.tracking import FaceTracker

# iBUG-68 index -> mediapipe index of the same point
PAIRS = {36: 33, 39: 133, 42: 362, 45: 263, 48: 61, 54: 291, 62: 13, 66: 14, 30: 4, 8: 152, 19: 105, 24: 334}
IBUG, MEDIAPIPE = list(PAIRS), list(PAIRS.values())
LIDS = {"right": (159, 145), "left": (386, 374)}  # mediapipe's mid upper and lower lid of each eye
LIDS_68 = {"right": ((37, 38), (41, 40)), "left": ((43, 44), (47, 46))}  # the same, as iBUG-68 midpoints


def errors(seen: np.ndarray, truth: np.ndarray, seen_lids: dict, truth_lids: dict) -> dict:
    """seen, truth: (12, 2) in PAIRS order, and each eye's (upper, lower) mid-lid points -> NME and the errors of
    the lip gap and eye openings (over the outer eye corners' distance)."""
    scale = np.linalg.norm(truth[IBUG.index(45)] - truth[IBUG.index(36)])

    def gap(p):
        return np.linalg.norm(p[IBUG.index(62)] - p[IBUG.index(66)]) / scale

    def opening(lids, side):
        return np.linalg.norm(np.subtract(*lids[side])) / scale

    return {"nme": float(np.linalg.norm(seen - truth, axis=1).mean() / scale), "lip_gap": abs(gap(seen) - gap(truth)),
            "eye_opening": float(np.mean([abs(opening(seen_lids, s) - opening(truth_lids, s)) for s in LIDS]))}


def photos(count: int) -> list[dict]:
    out = []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for path, points in read_landmark_photos(default_photos())[:count]:
            image = cv2.imread(str(path))
            if image is None:
                continue
            seen = tracker.track(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            if seen.found:
                lids = {side: (points[list(up)].mean(0), points[list(down)].mean(0))
                        for side, (up, down) in LIDS_68.items()}
                out.append(errors(seen.landmarks[MEDIAPIPE, :2], points[IBUG], _lids(seen.landmarks), lids))
    return out


def renders(face_model: ICTModel, count: int) -> list[dict]:
    from serep_engine.eval.synthrex import RENDER_SIZE
    from serep_engine.facemodel.identities import identity_shapes
    from serep_engine.render.head import Camera, HeadRenderer
    from serep_engine.synth import augment
    from serep_engine.synth.dataset import SynthGenerator
    from serep_engine.track.correspondence import mediapipe_to_template

    vertex, _ = mediapipe_to_template(face_model, open_mouth=True)
    renderer = HeadRenderer(face_model, RENDER_SIZE)
    out = []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for index in range(count):
            seed = EVAL_SEEDS[400_000 + index // 10]
            rng = np.random.default_rng([seed, index])
            identity = face_model.identity_weights(seed)
            weights = sample_expression(rng, neutral_probability=0.1)
            head = face_model.identity_neutral(identity, face_only=False)
            mesh = head + np.tensordot(weights, face_model.expression_basis, axes=1)
            mesh[:FACE_VERTEX_COUNT] = head[:FACE_VERTEX_COUNT] + np.tensordot(
                weights, identity_shapes(face_model, identity), axes=1)
            appearance = SynthGenerator.random_appearance(rng)
            camera = Camera(RENDER_SIZE, focal=2.5 * RENDER_SIZE, distance=2.5 * 16.0 / 0.45,
                            yaw=float(rng.uniform(-20, 20)), pitch=float(rng.uniform(-8, 8)))
            image, mask = renderer.render(mesh, camera, appearance)
            image = augment.degrade(np.where(mask[..., None], image, augment.procedural_background(rng, RENDER_SIZE)),
                                    rng)
            seen = tracker.track(image)
            if not seen.found:
                continue
            truth = camera.project(mesh[face_model.landmarks68[IBUG]])[0]
            truth_lips = camera.project(mesh[vertex[[13, 14]]])[0]  # the inner lips where mediapipe puts them
            truth[IBUG.index(62)], truth[IBUG.index(66)] = truth_lips
            truth_lids = _lids(np.pad(camera.project(mesh[vertex])[0], ((0, 0), (0, 1))))
            out.append(errors(seen.landmarks[MEDIAPIPE, :2], truth, _lids(seen.landmarks), truth_lids))
    return out


def _lids(points: np.ndarray) -> dict:
    return {side: (points[up, :2], points[down, :2]) for side, (up, down) in LIDS.items()}


def summary(rows: list[dict]) -> dict:
    return {"n": len(rows), **{k: round(float(np.median([r[k] for r in rows])), 4)
                               for k in ("nme", "lip_gap", "eye_opening")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=120)
    parser.add_argument("--photos", type=int, default=200)
    args = parser.parse_args()
    face_model = ICTModel.load()
    print(json.dumps({"median of": ["nme", "lip_gap error", "eye_opening error"],
                      "afw_photos": summary(photos(args.photos)),
                      "renders": summary(renders(face_model, args.renders))}))


if __name__ == "__main__":
    main()
