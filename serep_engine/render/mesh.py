"""Rendering any triangle mesh (one skin colour, no materials) for landmark detection, with the project's
shaders and pinhole `Camera`. The mesh is first moved into a "render frame": centred on its bounding sphere,
scaled to a head-sized radius in cm and turned so that the chosen view direction faces the camera."""

from __future__ import annotations

import numpy as np
import scipy.sparse

from serep_engine.render.head import (
    FRAGMENT_SHADER,
    HEAD_CENTRE,
    NO_PAINT,
    VERTEX_SHADER,
    Appearance,
    Camera,
    linear_depth,
    set_uniforms,
)

RENDER_RADIUS_CM = 14.0  # the mesh's bounding sphere is scaled to this radius for rendering
GREY = (0.5, 0.5, 0.5)


class MeshRenderer:
    """Renders one mesh (V, 3) / (T, 3) from any rotation; keeps the last depth buffer for lifting."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, size: int = 384):
        import moderngl

        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception:  # a desktop machine without EGL: the platform's default context
            self.ctx = moderngl.create_standalone_context()
        self.size = size
        vertices = np.asarray(vertices, np.float64)
        self.triangles = np.ascontiguousarray(triangles, np.int32)
        lo, hi = vertices.min(0), vertices.max(0)
        self.centre = (lo + hi) / 2
        self.scale = RENDER_RADIUS_CM / max(np.linalg.norm(hi - lo) / 2, 1e-12)  # render cm per user unit
        corners = self.triangles.ravel()
        self._incidence = scipy.sparse.csr_matrix(
            (np.ones(len(corners), np.float32), (corners, np.repeat(np.arange(len(self.triangles)), 3))),
            shape=(len(vertices), len(self.triangles)))
        self.set_vertices(vertices)
        self.program = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        self.position_buffer = self.ctx.buffer(reserve=len(vertices) * 12)
        self.normal_buffer = self.ctx.buffer(reserve=len(vertices) * 12)
        material = self.ctx.buffer(np.zeros(len(vertices), np.float32).tobytes())
        unpainted = np.tile(NO_PAINT, (len(vertices), 1))  # a user's mesh gets no face paint
        rest = self.ctx.buffer(np.ascontiguousarray(unpainted[:, :2]).tobytes())
        paint = self.ctx.buffer(np.ascontiguousarray(unpainted[:, 2:]).tobytes())
        self.vao = self.ctx.vertex_array(
            self.program,
            [(self.position_buffer, "3f", "in_position"), (self.normal_buffer, "3f", "in_normal"),
             (material, "1f", "in_material"), (rest, "2f", "in_rest"), (paint, "4f", "in_paint")],
            index_buffer=self.ctx.buffer(self.triangles.tobytes()))
        self.fbo = self.ctx.simple_framebuffer((size, size), components=4)
        self.camera = Camera(size, focal=2.2 * size, distance=3.2 * RENDER_RADIUS_CM)

    def set_vertices(self, vertices: np.ndarray) -> None:
        """New positions (user frame) for the same mesh, framed as the first ones were."""
        self.points = (np.asarray(vertices, np.float64) - self.centre) * self.scale  # render cm, centred
        v0, v1, v2 = (self.points[self.triangles[:, i]] for i in range(3))
        normals = self._incidence @ np.cross(v1 - v0, v2 - v0)
        self.normals = normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)

    def release(self) -> None:
        self.ctx.release()

    def render(self, rotation: np.ndarray, appearance: Appearance | None = None) -> np.ndarray:
        """RGB uint8 (S, S, 3) of the mesh turned by `rotation` (3x3, render frame) on a grey background."""
        appearance = appearance or Appearance()
        with self.ctx:  # this renderer's context current: another made since would take its calls
            self.position_buffer.write((self.points @ rotation.T + HEAD_CENTRE).astype(np.float32).tobytes())
            self.normal_buffer.write((self.normals @ rotation.T).astype(np.float32).tobytes())
            albedo = np.zeros((12, 3), np.float32)
            albedo[0] = appearance.skin
            set_uniforms(self.program, self.camera, albedo, appearance)
            self.fbo.use()
            self.fbo.clear(*GREY, 1.0, depth=1.0)
            self.ctx.enable(self.ctx.DEPTH_TEST)
            self.vao.render()
            rgba = np.frombuffer(self.fbo.read(components=4), np.uint8).reshape(self.size, self.size, 4)[::-1]
        return np.ascontiguousarray(rgba[..., :3])

    def depth(self) -> np.ndarray:
        """Camera-space depth (S, S) of the last render (inf where nothing was drawn)."""
        with self.ctx:
            return linear_depth(self.fbo, self.size)

    def lift(self, pixels: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """User-frame surface points (N, 3) under pixels (N, 2) of the last render (NaN off the mesh)."""
        points = self.camera.unproject(pixels, self.depth()) - HEAD_CENTRE
        return points @ rotation / self.scale + self.centre
