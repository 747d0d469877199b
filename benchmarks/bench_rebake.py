"""Re-bake from a kept capture and live slider feedback, in real Blender (the bpy module), with the add-on
registered from the checkout. Targets (issue 18): a re-bake of 1000 frames onto a 20k-vertex mesh in BASIS mode
<= 0.5 s; one control change shown on the frame under the playhead <= 50 ms. Prints one JSON line.

The kept result holds real codes (an iPhone take imported onto the template: real timing and co-activation) and
a code basis for a 20k-vertex grid (a stand-in for a dense head; only the counts matter for speed).

    python benchmarks/bench_rebake.py [--frames 1000] [--vertices 20000] [--repeat 5] [--changes 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import bpy
import numpy as np

import serep_blender
from serep_blender import tuning
from serep_engine.contract import read_take
from serep_engine.engine import CaptureOptions, Engine
from serep_engine.paths import data_dir


def grid_mesh(vertices: int):
    side = int(round(vertices ** 0.5))
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=side - 1, y_subdivisions=side - 1, size=0.3)
    obj = bpy.context.object
    obj.shape_key_add(name="Basis", from_mix=False)
    for name in ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft"):  # a rig's own ARKit keys, for the ARKit mode
        obj.shape_key_add(name=name, from_mix=False)
    return obj


def kept_result(frames: int, vertices: int):
    """Real codes (apfel.csv imported, unsmoothed) with a smooth random code basis on `vertices` vertices."""
    engine = Engine.from_pretrained("cpu")
    take = read_take(data_dir() / "real" / "arkit_takes" / "apfel.csv")
    result = engine.import_take(take, options=CaptureOptions(smoothing=0.0, rebake=True), end=frames)
    rng = np.random.default_rng(0)
    template = result.code_basis  # (D, 9409, 3): each code unit's real displacement, resampled onto the grid
    picks = rng.integers(0, template.shape[1], vertices)
    result.code_basis = np.ascontiguousarray(template[:, picks])
    result.basis = np.zeros((1, vertices, 3), np.float32)
    result.weights = np.zeros((result.n_frames, 1), np.float32)
    return result


def timed(function, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--vertices", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    bpy.ops.wm.read_homefile(use_empty=True)
    serep_blender.register()
    scene, settings = bpy.context.scene, bpy.context.scene.serep
    obj = grid_mesh(args.vertices)
    settings.target = obj
    report = {"frames": args.frames, "vertices": len(obj.data.vertices)}
    with tempfile.TemporaryDirectory() as folder:
        path = kept_result(args.frames, len(obj.data.vertices)).save(Path(folder) / "kept.npz")
        for mode in ("BASIS", "ARKIT"):
            how = {"mode": mode, "head": "OBJECT", "armature": "", "bone": "",
                   "arkit_keys": {n: n for n in ("jawOpen", "eyeBlinkLeft", "mouthSmileLeft")}}
            settings.live = False
            tuning.bake_kept(obj, path, "take", how, tuning.tuning(settings), scene)
            rebakes = timed(lambda: tuning.rebake(obj, settings, scene=scene), args.repeat)
            settings.live = True
            scene.frame_set(scene.frame_start + args.frames // 2)
            values = iter(np.linspace(0.5, 1.5, args.changes))
            changes = timed(lambda: setattr(settings, "strength_mouth", float(next(values))), args.changes)
            tuning.flush()
            name = mode.lower()
            report[f"{name}_rebake_median_s"] = round(statistics.median(rebakes), 4)
            report[f"{name}_rebake_runs_s"] = [round(t, 4) for t in rebakes]
            report[f"{name}_live_change_median_ms"] = round(1000 * statistics.median(changes), 2)
            report[f"{name}_live_change_max_ms"] = round(1000 * max(changes), 2)
            settings.strength_mouth = 1.0
    print(json.dumps(report))


if __name__ == "__main__":
    main()
