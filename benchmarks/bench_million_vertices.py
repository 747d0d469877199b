"""Retargeting fit of a ~1M-vertex head (a held-out ICT identity with eyes and teeth, subdivided): time and
peak memory. `python benchmarks/bench_million_vertices.py` (last line JSON)."""

import json
import resource
import time

import trimesh

from serep_engine.facemodel.ict import EVAL_SEEDS, ICTModel, quads_to_triangles
from serep_engine.retarget import fit_target

fm = ICTModel.load()
head = fm.identity_neutral(fm.identity_weights(EVAL_SEEDS[7]), face_only=False)
tris = quads_to_triangles(fm.polygons)
mesh = trimesh.Trimesh(head, tris, process=False)
v, f = mesh.vertices, mesh.faces
edge = 0.12
while True:
    v2, f2 = trimesh.remesh.subdivide_to_size(v, f, max_edge=edge)
    if len(v2) >= 900_000:
        break
    edge *= 0.85
print(len(v2), len(f2), flush=True)
t = time.time()
reg = fit_target(fm, v2 * 0.01, f2, use_cache=False)
print(json.dumps({"vertices": len(v2), "seconds": round(time.time() - t, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "auto_landmarks": reg.auto_landmarks, "fit_residual_mm": reg.fit_residual_mm}))
