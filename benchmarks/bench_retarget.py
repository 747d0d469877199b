"""Fitting speed: seconds for `fit_target` (automatic landmarks, identity fit, non-rigid ICP, transfer matrix)
on user meshes of about 50k and 100k vertices, no cache; and `to_user` of a 64-key basis.

    .venv/bin/python benchmarks/bench_retarget.py [--repeats 3]

Prints one JSON line with the median of the repeats per mesh. The meshes are held-out ICT heads (head and
neck), midpoint-subdivided, turned and in metres, as in `serep eval retarget`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from serep_engine.eval.retarget import EYES_AND_TEETH, HEAD_POLYGONS, HEAD_VERTICES, subdivide
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, ICTModel, quads_to_triangles
from serep_engine.facemodel.identities import eval_identity
from serep_engine.retarget import fit_target


def head(face_model: ICTModel, with_eyes_and_teeth: bool):
    full = face_model.identity_neutral(eval_identity(face_model, 20), face_only=False).astype(np.float64)
    keep = np.arange(HEAD_VERTICES)
    polygons = face_model.polygons[:HEAD_POLYGONS]
    if with_eyes_and_teeth:
        extra = np.concatenate([np.arange(*r) for r in EYES_AND_TEETH])
        keep = np.concatenate([keep, extra])
        inside = np.isin(face_model.polygons, np.r_[extra, -1]).all(1)
        polygons = np.concatenate([polygons, face_model.polygons[inside]])
    index_of = np.full(len(full) + 1, -1)
    index_of[keep] = np.arange(len(keep))
    triangles = quads_to_triangles(np.where(polygons >= 0, index_of[polygons], -1))
    vertices, triangles, _ = subdivide(full[keep], triangles)
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return 0.01 * vertices @ turn.T + [0.3, 1.5, 0.0], triangles


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    face_model = ICTModel.load()
    out = {"load_average": round(os.getloadavg()[0], 2)}
    for label, extras in (("head", False), ("head_eyes_teeth", True)):
        vertices, triangles = head(face_model, extras)
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            registration = fit_target(face_model, vertices, triangles, use_cache=False)
            seconds.append(time.perf_counter() - started)
        basis = np.random.default_rng(0).standard_normal((64, FACE_VERTEX_COUNT, 3)).astype(np.float32)
        started = time.perf_counter()
        registration.to_user(basis)
        out[label] = {"vertices": len(vertices), "fit_median_s": round(float(np.median(seconds)), 2),
                      "fit_s": [round(s, 2) for s in seconds],
                      "to_user_64_keys_s": round(time.perf_counter() - started, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
