"""What a running capture costs Blender's UI: the time of each timer tick of the add-on
(serep_blender.capture_queue.tick:
read the worker's JSON lines, update the state, tag the sidebar for redraw) while a real engine worker captures a
real clip onto a real head mesh, in Blender (the bpy module). Target: under 1 ms a tick. The first tick (it
starts the worker process) and the last (it bakes the result) are reported apart. Prints one JSON line.

    .venv/bin/python benchmarks/bench_ui_tick.py [--clip May_5s.mp4] [--end 125] [--interval 0.1]

The bpy module runs no event loop, so the ticks are called here at the timer's interval, as Blender would.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import bpy

from serep_blender import capture_queue
from serep_blender.preferences import Settings
from serep_engine.bench import bench_target
from serep_engine.facemodel.ict import ICTModel
from serep_engine.paths import data_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", default="May_5s.mp4", help="a clip of the shared data's real/videos, or a path")
    parser.add_argument("--end", type=int, default=None, help="one past the last frame")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between ticks (the add-on's timer)")
    args = parser.parse_args()
    clip = Path(args.clip) if Path(args.clip).exists() else data_dir() / "real" / "videos" / args.clip
    target = bench_target(ICTModel.load())
    bpy.ops.wm.read_homefile(use_empty=True)
    mesh = bpy.data.meshes.new("head")
    mesh.from_pydata(target.vertices.tolist(), [], target.triangles.tolist())
    obj = bpy.data.objects.new("head", mesh)
    bpy.context.scene.collection.objects.link(obj)
    queue = capture_queue.CaptureQueue(obj, [(clip, 0, args.end)], capture_queue.Options(), Settings(),
                                       undo_steps=False)
    capture_queue.start(queue, wait=False)
    ticks, started = [], time.perf_counter()
    try:
        while True:
            tick_started = time.perf_counter()
            again = capture_queue.tick()
            ticks.append(time.perf_counter() - tick_started)
            if again is None:
                break
            time.sleep(args.interval)
    finally:
        capture_queue.stop_all()
    polls = [1000 * t for t in ticks[1:-1]]
    print(json.dumps({"clip": clip.name, "vertices": len(target.vertices), "ticks": len(ticks),
                      "seconds": round(time.perf_counter() - started, 2), "baked": len(queue.baked),
                      "errors": capture_queue.LAST["error"], "poll_tick_median_ms": round(statistics.median(polls), 3),
                      "poll_tick_p99_ms": round(sorted(polls)[int(0.99 * (len(polls) - 1))], 3),
                      "poll_tick_max_ms": round(max(polls), 3), "first_tick_ms": round(1000 * ticks[0], 2),
                      "bake_tick_ms": round(1000 * ticks[-1], 2)}))


if __name__ == "__main__":
    main()
