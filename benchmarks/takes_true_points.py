"""How much of the refined capture's error on the takes is mediapipe's reading of our renders (issue 17).

The takes part of `serep eval real` renders real ARKit motion on held-out identities; the refined capture follows
mediapipe's points (capture/refine.py), and on these renders it scores far below the network alone. Here the takes
are scored again with one group of mediapipe's points (eyelids, brows, lips, or all three) replaced by the rendered
mesh's own points at the same template vertices: the true mesh is placed on mediapipe's points by the refinement's
similarity (its pose weights), and each replaced point keeps mediapipe's own constant offset from it over the video
(its median), so only mediapipe's frame-to-frame reading of that group is replaced, not where it puts the points on a
face.
`--axes y` replaces the points' image-plane height only.

Per variant: the per-shape correlations of the ARKit weights with the take's (mean over the videos) and the regions'
mean error (mm), as `serep eval real` reports them. Same renders, network codes and refinement as the benchmark;
the keys are the refined meshes' own (the product takes NETWORK_KEYS from the network's codes instead,
retarget/arkit.py: fused_keys, so on those shapes the benchmark's serep row differs from the first row here).

    python benchmarks/takes_true_points.py [--takes DIR] [--axes xyz|y]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GROUPS = ("eyelids", "brows", "lips")


def group_points() -> dict[str, tuple[int, ...]]:
    from serep_engine.capture.refine import BROW_POINTS, EYE_POINTS
    from serep_engine.track.correspondence import LIP_POINTS

    return {"eyelids": EYE_POINTS, "brows": BROW_POINTS, "lips": tuple(LIP_POINTS)}


def with_true_points(landmarks: np.ndarray, truth: np.ndarray, found: np.ndarray, refiner, vertex: np.ndarray,
                     points: tuple[int, ...], axes: list[int]) -> np.ndarray:
    """mediapipe's (F, 478, 3) points with `points` moved to the true mesh's (F, V, 3) motion (see the module)."""
    from serep_engine.capture.refine import align

    out = landmarks.astype(np.float64).copy()
    seen = out[found][:, refiner.points] * [1.0, -1.0, -1.0]  # the refinement's frame: y up, toward the viewer
    placed = align(truth[found][:, vertex[refiner.points]], seen, refiner.pose_weights)
    rows = np.flatnonzero(np.isin(refiner.points, points))
    moved = placed[:, rows] + np.median(seen[:, rows] - placed[:, rows], axis=0)
    replaced = seen[:, rows].copy()
    replaced[..., axes] = moved[..., axes]
    block = out[found]
    block[:, refiner.points[rows]] = replaced * [1.0, -1.0, -1.0]
    out[found] = block
    return out.astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", default=None, help="folder of takes (default: the benchmark's)")
    parser.add_argument("--axes", choices=("xyz", "y"), default="xyz")
    args = parser.parse_args()

    import torch

    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.refine import LandmarkRefiner
    from serep_engine.contract import TAKE_SUFFIXES
    from serep_engine.eval.baselines import network_codes, refined_codes
    from serep_engine.eval.takes import default_takes, prepare, score_video, summary, take_meshes
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.retarget.arkit import ARKitSolver
    from serep_engine.synth.shards import load_frames
    from serep_engine.track.correspondence import mediapipe_to_template
    from serep_engine.track.filters import fill_gaps, smooth_codes

    face_model = ICTModel.load()
    capture_model = CaptureModel.from_pretrained("auto")
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    vertex, _ = mediapipe_to_template(face_model, open_mouth=True)
    points = group_points()
    variants = {"mediapipe": ()} | {g: points[g] for g in GROUPS} | {"all three": sum(points.values(), ())}
    axes = [0, 1, 2] if args.axes == "xyz" else [1]
    corrs = {v: {} for v in variants}
    errors = {v: {} for v in variants}
    folder = Path(args.takes) if args.takes else default_takes()
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in TAKE_SUFFIXES)
    for index, path in enumerate(paths):
        take = prepare(face_model, path, index)
        if take is None:
            continue
        neutral, truth = take_meshes(face_model, take)
        solver = ARKitSolver(face_model, neutral)
        with torch.no_grad():
            basis = expression_model.identity_basis(neutral).numpy()
        refiner = LandmarkRefiner(face_model, basis, neutral)
        for view in take["views"].values():
            tracked = network_codes(capture_model, load_frames(view)["frames"])
            found = tracked["found"]
            for name, replaced in variants.items():
                landmarks = (with_true_points(tracked["landmarks"], truth, found, refiner, vertex, replaced, axes)
                             if replaced else tracked["landmarks"])
                codes = refined_codes(face_model, basis, neutral, tracked | {"landmarks": landmarks})
                codes = smooth_codes(fill_gaps(codes, found), 30.0, 1.0, found)
                meshes = neutral[None] + np.tensordot(codes, basis, axes=1)
                score_video(face_model, meshes, solver.solve(meshes - neutral), truth, take["arkit"], corrs[name],
                            errors[name])
    out = {}
    for name in variants:
        if errors[name]:
            scored = summary(corrs[name], errors[name])
            out[name] = {"shapes": {s: round(c, 3) for s, c in scored["shapes"].items() if c is not None},
                         "regions_mm_mean": round(float(scored["regions_mm"]["mean"]), 3)}
    print(json.dumps({"axes": args.axes, "variants": out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
