"""The demo behind `python build.py demo`, run headless with Blender as the bpy module:

    python -m serep_blender.demo --clip CLIP --out out/ [--frames N]

bakes the clip onto a sample character of the project's own making (`sample.py`: not the template's
topology) through the add-on's own operator (`bpy.ops.serep.capture(..., wait=True)`), renders the baked
character with Blender (Workbench), and writes out/demo.blend, out/demo_preview.mp4 (the clip beside the
render) and out/demo_summary.json, printing a one-screen summary. Not used by the add-on's UI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bpy
import numpy as np


def build_scene(clip_fps: float):
    from serep_blender.sample import make_sample_head
    from serep_engine.facemodel.ict import ICTModel

    bpy.ops.wm.read_homefile(use_empty=True)
    face_model = ICTModel.load()
    keep = np.isin(face_model.polygon_material, [0, 1, 4, 5, 6, 7])  # skin, back of the head, eyes
    vertices = face_model.identity_neutral(face_model.identity_weights(11, scale=1.8), face_only=False)
    head = make_sample_head(vertices, face_model.polygons[keep], name="Character")
    material = bpy.data.materials.new("Skin")
    material.diffuse_color = (0.86, 0.62, 0.5, 1.0)
    head.data.materials.append(material)
    scene = bpy.context.scene
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location, camera.rotation_euler = (0.0, -0.9, 0.03), (np.pi / 2, 0.0, 0.0)
    camera.data.lens = 60
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.render.resolution_x = scene.render.resolution_y = 360
    scene.render.fps, scene.render.fps_base = round(clip_fps), round(clip_fps) / clip_fps
    scene.frame_start = 1
    bpy.context.view_layer.objects.active = head
    return head


def compose(clip: Path, renders: list[Path], fps: float, out: Path) -> None:
    """The clip's frames (from its first) beside the renders, as an mp4."""
    import cv2

    capture = cv2.VideoCapture(str(clip))
    writer = None
    for render_path in renders:
        ok, frame = capture.read()
        if not ok:
            break
        render = cv2.imread(str(render_path))
        height = render.shape[0]
        frame = cv2.resize(frame, (round(frame.shape[1] * height / frame.shape[0]), height))
        both = np.hstack([frame, render])
        if writer is None:
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, both.shape[1::-1])
        writer.write(both)
    writer.release()
    capture.release()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serep_blender.demo")
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=0, help="frames to capture (0: the whole clip)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    import serep_blender
    from serep_blender import capture_queue
    from serep_blender.properties import clip_info

    serep_blender.register()
    fps, clip_frames = clip_info(str(args.clip))
    head = build_scene(fps)
    bpy.context.scene.serep.head = "OBJECT"
    started = time.perf_counter()
    try:
        bpy.ops.serep.capture(filepath=str(args.clip.resolve()), frame_start=0, frame_end=args.frames,
                              mode="BASIS", wait=True, target=head.name)
    except RuntimeError as error:  # the operator's report, e.g. the engine's error message
        print(f"demo: capture failed: {str(error).strip()}", file=sys.stderr)
        return 1
    capture_seconds = time.perf_counter() - started
    (baked,) = capture_queue.ACTIVE.baked
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = (round(t) for t in baked["frame_range"])
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))

    started = time.perf_counter()
    renders = []
    for frame in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(frame)
        scene.render.filepath = str(out / "render" / f"{frame:05d}.png")
        bpy.ops.render.render(write_still=True)
        renders.append(Path(scene.render.filepath))
    render_seconds = time.perf_counter() - started
    compose(args.clip, renders, scene.render.fps / scene.render.fps_base, out / "demo_preview.mp4")

    summary = {"clip": args.clip.name, "clip_fps": round(fps, 3), "clip_frames": clip_frames,
               "frames_baked": baked["frames"], "frames_without_face": baked["faceless_frames"],
               "character_vertices": len(head.data.vertices), "shape_keys": baked["new_keys"],
               "action": baked["action"], "capture_and_bake_s": round(capture_seconds, 1),
               "capture_fps": round(baked["frames"] / capture_seconds, 1), "render_s": round(render_seconds, 1),
               "warnings": baked["warnings"], "blend": str(out / "demo.blend"),
               "preview": str(out / "demo_preview.mp4")}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1))
    print("\nSEREP demo")
    for name, value in summary.items():
        print(f"  {name:22s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
