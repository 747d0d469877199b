"""`serep capture --preview`: a side-by-side video to judge a capture by eye. Left, the input frame with the
capture model's 68 landmarks (green; red frame border where no face was found); right, the captured
expression decoded onto the template head and rendered (the eyes, lashes, teeth and mouth interior, which the code
does not move, follow the ARKit weights solved from the decoded face); with a target, a third panel shows the target
mesh moved by the result's shape-key basis, turned to face the camera."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from serep_engine.contract.result import CaptureResult
from serep_engine.expression.decoder import ExpressionDecoder
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, ICTModel
from serep_engine.track.video import read_frames

PANEL = 360


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    scale = height / image.shape[0]
    return cv2.resize(image, (max(int(round(image.shape[1] * scale)), 1), height), interpolation=cv2.INTER_AREA)


def write_preview(video_path: str | os.PathLike, result: CaptureResult, out_path: str | os.PathLike,
                  face_model: ICTModel, expression_model, target=None, registration=None) -> Path:
    """`target` (a TargetMesh whose vertices the result's basis moves) and its `registration` (for the view)."""
    from serep_engine.render.head import Appearance, Camera, HeadRenderer
    from serep_engine.retarget.arkit import GAZE, ARKitSolver, arkit_shapes

    out_path = Path(out_path)
    renderer = HeadRenderer(face_model, PANEL)
    camera = Camera(PANEL, focal=2.4 * PANEL, distance=2.4 * 16.0 / 0.5)
    appearance = Appearance()
    basis = ExpressionDecoder.of(expression_model).identity_basis(face_model.face_neutral)
    head = face_model.neutral.copy()
    solver = ARKitSolver(face_model, face_model.face_neutral)
    if result.tracker_blendshapes is not None:  # the eyes turn as the tracker saw them
        names = [str(name) for name in result.tracker_blendshape_names]
        gaze_columns = [names.index(name) for name in GAZE]
    rest_of_head = arkit_shapes(face_model, face_model.expression_basis[:, FACE_VERTEX_COUNT:])
    target_view = None
    if target is not None:
        from serep_engine.render.mesh import MeshRenderer

        target_view = MeshRenderer(target.vertices, target.triangles, PANEL)
        target_rotation = registration.similarity.rotation
    position = {int(f): i for i, f in enumerate(result.frames)}
    writer = None
    tmp = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp{out_path.suffix or '.mp4'}")
    try:
        for index, rgb in read_frames(video_path, int(result.frames[0]), int(result.frames[-1]) + 1):
            i = position.get(index)
            if i is None:
                continue
            left = _fit_height(rgb, PANEL)
            scale = PANEL / rgb.shape[0]
            if result.face_found[i] and result.landmarks2d is not None:
                for x, y in result.landmarks2d[i] * scale:
                    if np.isfinite(x) and np.isfinite(y):
                        cv2.circle(left, (int(x), int(y)), 2, (0, 255, 0), -1, cv2.LINE_AA)
            else:
                cv2.rectangle(left, (0, 0), (left.shape[1] - 1, PANEL - 1), (255, 0, 0), 4)
            mesh = head.copy()
            face = np.tensordot(result.codes[i], basis, axes=1)
            mesh[:FACE_VERTEX_COUNT] += face
            gaze = None if result.tracker_blendshapes is None else result.tracker_blendshapes[i:i + 1, gaze_columns]
            mesh[FACE_VERTEX_COUNT:] += np.tensordot(solver.solve(face[None], gaze)[0], rest_of_head, axes=1)
            right, _ = renderer.render(mesh, camera, appearance)
            panels = [left, right]
            if target_view is not None:
                target_view.set_vertices(target.vertices + np.tensordot(result.weights[i], result.basis, axes=1))
                panels.append(target_view.render(target_rotation))
            frame = np.hstack(panels)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), result.fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise RuntimeError(f"cannot write a preview video at {out_path}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if writer is None:
            raise RuntimeError("no frames to preview")
        writer.release()
        writer = None
        os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return out_path
