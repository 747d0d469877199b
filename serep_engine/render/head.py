"""Headless OpenGL renderer of the whole ICT head (skin, eyes, teeth, gums and tongue, mouth socket,
lashes) through moderngl with an EGL context: Mesa's llvmpipe on a CPU machine, the NVIDIA driver on a
GPU machine.

Shading: per-material albedo, second-order spherical-harmonics ambient light, one directional light
with Blinn-Phong specular. Face paint (`painted`, on by default): eyebrows, red lips, a mouth that darkens inside
and lashes dense at the lid's margin: ICT's mesh has none of these, and without them mediapipe misread our renders'
lids, brows and lips, which scored the landmark-following capture on mediapipe's error
(`benchmarks/takes_true_points.py`). The camera is a pinhole looking down -Z; pixel (u, v) of a point (x, y, z)
in camera space is (c + f x / -z, c - f y / -z).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from serep_engine.facemodel.ict import ICTModel, quads_to_triangles

# ICT materials drawn, with their base colours (linear RGB); the transparent shells (lacrimal fluid, eye
# blend, eye occlusion) are left out.
MATERIAL_COLOURS = {
    "M_Face": None,  # skin, per sample
    "M_BackHead": None,  # skin
    "M_GumsTongue": (0.55, 0.16, 0.17),
    "M_Teeth": (0.85, 0.82, 0.74),
    "M_ScleraLeft": (0.86, 0.84, 0.82),
    "M_IrisLeft": None,  # iris, per sample
    "M_ScleraRight": (0.86, 0.84, 0.82),
    "M_IrisRight": None,
    "M_EyeLashes": (0.05, 0.04, 0.04),
}
HEAD_CENTRE = np.array([0.0, 1.0, 0.0], np.float32)  # cm, the point head rotations turn about
LIP_TINT = (0.80, 0.52, 0.52)  # the lips' albedo over the skin's (linear RGB)
BROW_SHADE = 0.15  # the brows' albedo over the skin's where an appearance gives none
LASH_ROOT_CM = 0.5  # a lash card is drawn whole at the lid, thinning to the fringe this far out

VERTEX_SHADER = """
#version 330
uniform mat4 model_view;
uniform mat4 projection;
in vec3 in_position;
in vec3 in_normal;
in float in_material;
in vec2 in_rest;
in vec4 in_paint;
out vec3 view_position;
out vec3 view_normal;
out vec2 rest;
out vec4 paint;
flat out int material;
void main() {
    vec4 p = model_view * vec4(in_position, 1.0);
    rest = in_rest;
    paint = in_paint;
    view_position = p.xyz;
    view_normal = mat3(model_view) * in_normal;
    material = int(in_material + 0.5);
    gl_Position = projection * p;
}
"""

FRAGMENT_SHADER = """
#version 330
uniform vec3 albedo[12];
uniform vec3 sh[9];
uniform vec3 light_direction;  // towards the light, camera space
uniform vec3 light_colour;
uniform float specular;
uniform float shininess;
uniform vec3 brow_colour;
uniform vec2 brow_line[5];  // the brows' upper edge on the template's neutral (|x|, y in cm), inner end first
uniform vec3 lips;  // the lips' albedo over the skin's
in vec3 view_position;
in vec3 view_normal;
in vec2 rest;  // the point's place on the template's neutral (x, y)
in vec4 paint;  // where brows may be, the lips' share, the light reaching into the mouth, how far out on a lash
flat in int material;
out vec4 colour;
float brow(vec2 p) {
    float x = abs(p.x);
    float top = brow_line[0].y;
    for (int i = 0; i < 4; i++) {
        if (x >= brow_line[i].x) {
            top = mix(brow_line[i].y, brow_line[i + 1].y,
                      clamp((x - brow_line[i].x) / (brow_line[i + 1].x - brow_line[i].x), 0.0, 1.0));
        }
    }
    float along = clamp((x - brow_line[0].x) / (brow_line[4].x - brow_line[0].x), 0.0, 1.0);
    float bottom = top - mix(0.85, 0.35, along);
    return smoothstep(top + 0.06, top - 0.06, p.y) * smoothstep(bottom - 0.06, bottom + 0.06, p.y)
         * smoothstep(brow_line[0].x - 0.25, brow_line[0].x + 0.15, x)
         * smoothstep(brow_line[4].x + 0.2, brow_line[4].x - 0.3, x);
}
vec3 irradiance(vec3 n) {
    return sh[0] + sh[1] * n.y + sh[2] * n.z + sh[3] * n.x + sh[4] * n.x * n.y + sh[5] * n.y * n.z
         + sh[6] * (3.0 * n.z * n.z - 1.0) + sh[7] * n.x * n.z + sh[8] * (n.x * n.x - n.y * n.y);
}
void main() {
    // ICT's lashes are alpha-textured cards: keep them whole at the lid's margin, a sparse fringe of them outward.
    float keep = mix(1.0, 0.3, paint.w);
    if (material == 8 && fract(sin(dot(floor(gl_FragCoord.xy), vec2(12.9898, 78.233))) * 43758.5453) > keep) discard;
    vec3 n = normalize(view_normal);
    vec3 v = normalize(-view_position);
    if (dot(n, v) < 0.0) n = -n;
    vec3 base = albedo[material];
    if (material <= 1) {
        base *= mix(vec3(1.0), lips, paint.y);
        if (paint.x > 0.0) base = mix(base, brow_colour, 0.85 * paint.x * brow(rest));
    }
    vec3 diffuse = (max(irradiance(n), vec3(0.0)) + light_colour * max(dot(n, light_direction), 0.0)) * paint.z;
    vec3 h = normalize(light_direction + v);
    float spec = specular * pow(max(dot(n, h), 0.0), shininess) * float(material <= 1 || material == 3);
    vec3 linear = base * diffuse + light_colour * spec * paint.z;
    colour = vec4(pow(clamp(linear, 0.0, 1.0), vec3(1.0 / 2.2)), 1.0);
}
"""


@dataclass
class Camera:
    """Head pose (degrees, about HEAD_CENTRE), distance (cm) and focal length (pixels) for a square image."""

    size: int = 320
    focal: float = 900.0
    distance: float = 60.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)  # cm, the head's shift across the image plane

    def rotation(self) -> np.ndarray:
        y, p, r = np.radians([self.yaw, self.pitch, self.roll])
        ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        return rz @ rx @ ry

    def model_view(self) -> np.ndarray:
        """4x4 taking head coordinates (cm) to camera space."""
        matrix = np.eye(4)
        rotation = self.rotation()
        matrix[:3, :3] = rotation
        matrix[:3, 3] = -rotation @ HEAD_CENTRE + [self.offset[0], self.offset[1], -self.distance]
        return matrix

    def projection(self, near: float = 1.0, far: float = 1000.0) -> np.ndarray:
        s = 2.0 * self.focal / self.size
        return np.array([
            [s, 0, 0, 0], [0, s, 0, 0],
            [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)], [0, 0, -1, 0],
        ])

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) and camera-space depth (N,) of head-space points (N, 3)."""
        model_view = self.model_view()
        camera = points @ model_view[:3, :3].T + model_view[:3, 3]
        depth = -camera[:, 2]
        centre = self.size / 2.0
        pixels = np.stack([centre + self.focal * camera[:, 0] / depth, centre - self.focal * camera[:, 1] / depth], 1)
        return pixels, depth

    def unproject(self, pixels: np.ndarray, depth_image: np.ndarray) -> np.ndarray:
        """Head-space points (N, 3) of the surface under pixels (N, 2) of a render's depth image (the inverse
        of `project`); NaN where nothing was drawn."""
        ij = np.clip(pixels.round().astype(int), 0, self.size - 1)
        depth = depth_image[ij[:, 1], ij[:, 0]]
        depth = np.where(np.isfinite(depth), depth, np.nan)
        centre = self.size / 2.0
        camera = np.stack([(pixels[:, 0] - centre) * depth / self.focal,
                           -(pixels[:, 1] - centre) * depth / self.focal, -depth], 1)
        model_view = self.model_view()
        return (camera - model_view[:3, 3]) @ model_view[:3, :3]


@dataclass
class Appearance:
    skin: tuple[float, float, float] = (0.62, 0.45, 0.36)
    iris: tuple[float, float, float] = (0.25, 0.15, 0.08)
    sh: np.ndarray = field(default_factory=lambda: np.array([[0.45] * 3] + [[0.0] * 3] * 8, np.float32))
    light_direction: tuple[float, float, float] = (0.3, 0.4, 0.85)
    light_colour: tuple[float, float, float] = (0.6, 0.6, 0.6)
    specular: float = 0.15
    shininess: float = 24.0
    brows: tuple[float, float, float] | None = None  # None: the skin's, darkened (BROW_SHADE)


IRIS_COSINE, PUPIL_COSINE = 0.88, 0.975  # angular radii of iris and pupil about the eye's axis
PUPIL_SLOT = 9


def _eye_shading(face_model: ICTModel, vertex_slot: np.ndarray) -> np.ndarray:
    """ICT's eyes are textured: here the front of each eyeball is white, with an iris and a pupil disc
    about the eye's axis. Returns the mask of cornea polygons (sclera in front of the iris, transparent
    in ICT's shader, which would hide the iris) and recolours vertex_slot in place."""
    materials = list(face_model.materials)
    polygons = face_model.polygons
    centroids = face_model.neutral[np.where(polygons >= 0, polygons, polygons[:, :1])].mean(1)
    cornea = np.zeros(len(polygons), bool)
    for side in ("Left", "Right"):
        sclera = face_model.polygon_material == materials.index(f"M_Sclera{side}")
        iris = face_model.polygon_material == materials.index(f"M_Iris{side}")
        centre = centroids[sclera].mean(0)
        axis = centroids[iris].mean(0) - centre
        axis /= np.linalg.norm(axis)

        def cosine(points, centre=centre, axis=axis):
            offsets = points - centre
            return offsets @ axis / np.linalg.norm(offsets, axis=1)

        cornea |= sclera & (cosine(centroids) > cosine(centroids[iris]).min())
        front = np.unique(polygons[iris][polygons[iris] >= 0])
        angle = cosine(face_model.neutral[front])
        vertex_slot[front] = np.where(angle > PUPIL_COSINE, PUPIL_SLOT,
                                      np.where(angle > IRIS_COSINE, vertex_slot[front], vertex_slot[front] - 1))
    return cornea


NO_PAINT = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0], np.float32)  # a vertex without face paint (`face_paint`)


def face_paint(face_model: ICTModel) -> np.ndarray:
    """(N, 6) per head vertex: its place on the template's neutral (x, y), whether brows may be drawn there (the
    face's skin in front), the lips' share of their red (the skin inside the outer lip line, iBUG 48-59, fading over
    2 mm across it), the light that reaches into the mouth (falling off with depth behind the lips: ICT's teeth, gums
    and tongue would be lit like the face), and how far out on its card a lash vertex is (0 at the lid, 1 from
    LASH_ROOT_CM out)."""
    import cv2
    from scipy.spatial import cKDTree

    neutral = face_model.neutral
    materials = list(face_model.materials)

    def vertices_of(*names):
        chosen = np.isin(face_model.polygon_material, [materials.index(name) for name in names])
        mask = np.zeros(len(neutral), bool)
        corners = face_model.polygons[chosen].ravel()
        mask[corners[corners >= 0]] = True
        return mask

    paint = np.tile(NO_PAINT, (len(neutral), 1))
    paint[:, :2] = neutral[:, :2]
    skin = vertices_of("M_Face")
    paint[:, 2] = skin & (neutral[:, 2] > 6.0)
    outline = neutral[face_model.landmarks68[48:60]]
    lips_front = outline[:, 2].max()
    contour = outline[:, :2].astype(np.float32)
    inside = np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x, y in neutral[:, :2]])
    lip_skin = skin & (neutral[:, 2] > lips_front - 2.5)
    paint[:, 3] = np.where(lip_skin, np.clip(inside / 0.2 + 0.5, 0.0, 1.0), 0.0)
    depth = np.clip(lips_front - neutral[:, 2], 0.0, None)
    paint[:, 4] = np.where(vertices_of("M_GumsTongue", "M_Teeth"), np.clip(np.exp(-depth / 1.5), 0.05, 1.0), 1.0)
    lashes = vertices_of("M_EyeLashes")
    out, _ = cKDTree(neutral[skin]).query(neutral[lashes])
    paint[lashes, 5] = np.clip(out / LASH_ROOT_CM, 0.0, 1.0)
    return paint


def brow_line(face_model: ICTModel) -> np.ndarray:
    """(5, 2) the brows' upper edge on the template's neutral, |x| and y (iBUG 22-26: the face's left brow, inner
    end first; the shader mirrors it)."""
    return face_model.neutral[face_model.landmarks68[22:27], :2].astype(np.float32)


def set_uniforms(program, camera: Camera, albedo: np.ndarray, appearance: Appearance) -> None:
    """The shading uniforms every renderer of the project sets (camera, albedo per slot, light)."""
    light = np.asarray(appearance.light_direction, np.float32)
    uniforms = {
        "model_view": camera.model_view(), "projection": camera.projection(), "albedo": albedo,
        "sh": np.asarray(appearance.sh, np.float32), "light_direction": light / np.linalg.norm(light),
        "light_colour": np.asarray(appearance.light_colour, np.float32),
        "specular": appearance.specular, "shininess": appearance.shininess,
        "brow_colour": np.asarray(appearance.brows if appearance.brows is not None
                                  else np.multiply(appearance.skin, BROW_SHADE), np.float32),
        "lips": np.asarray(LIP_TINT, np.float32),
    }
    for name, value in uniforms.items():
        if name in program:
            value = np.asarray(value, np.float32)
            program[name].write((value.T if value.shape == (4, 4) else value).astype(np.float32).tobytes())


def linear_depth(fbo, size: int) -> np.ndarray:
    """Camera-space depth (S, S) of the last render into `fbo` (inf where nothing was drawn)."""
    raw = np.frombuffer(fbo.read(components=1, attachment=-1, dtype="f4"), np.float32).reshape(size, size)[::-1]
    near, far = 1.0, 1000.0
    depth = 2.0 * near * far / (far + near - (raw * 2.0 - 1.0) * (far - near))
    depth[raw >= 1.0] = np.inf
    return depth


class HeadRenderer:
    """Renders ICT head meshes (the full 26719-vertex topology) into RGB images with a coverage mask."""

    def __init__(self, face_model: ICTModel, size: int = 320, painted: bool = True):
        """`painted`: with face paint (`face_paint`); without, the renders as they were before it (what the
        tracker's correspondence with the template was measured on)."""
        import moderngl

        try:
            self.ctx = moderngl.create_standalone_context(backend="egl")
        except Exception:  # a desktop machine without EGL: the platform's default context
            self.ctx = moderngl.create_standalone_context()
        self.size = size
        materials = list(face_model.materials)
        drawn = [materials.index(name) for name in MATERIAL_COLOURS]
        keep = np.isin(face_model.polygon_material, drawn)
        polygons = face_model.polygons[keep]
        polygon_material = face_model.polygon_material[keep]
        self.triangles = quads_to_triangles(polygons).astype(np.int32)
        triangle_material = np.concatenate([polygon_material, polygon_material[polygons[:, 3] >= 0]])
        # Shader slot of each vertex: 0 skin, 1 back of head (skin), 2.. the rest in MATERIAL_COLOURS order.
        slot_of_material = {materials.index(name): i for i, name in enumerate(MATERIAL_COLOURS)}
        vertex_slot = np.zeros(len(face_model.neutral), np.float32)
        vertex_slot[self.triangles.ravel()] = np.repeat([slot_of_material[m] for m in triangle_material], 3)
        cornea = _eye_shading(face_model, vertex_slot)[keep]
        polygons = polygons[~cornea]
        self.triangles = quads_to_triangles(polygons).astype(np.int32)
        self.n_vertices = len(face_model.neutral)
        corners = self.triangles.ravel()
        self._vertex_triangle = scipy.sparse.csr_matrix(
            (np.ones(len(corners), np.float32), (corners, np.repeat(np.arange(len(self.triangles)), 3))),
            shape=(self.n_vertices, len(self.triangles)))
        self.program = self.ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
        self.position_buffer = self.ctx.buffer(reserve=self.n_vertices * 12)
        self.normal_buffer = self.ctx.buffer(reserve=self.n_vertices * 12)
        material_buffer = self.ctx.buffer(vertex_slot.tobytes())
        paint = face_paint(face_model) if painted else np.tile(NO_PAINT, (self.n_vertices, 1))
        rest_buffer = self.ctx.buffer(np.ascontiguousarray(paint[:, :2]).tobytes())
        paint_buffer = self.ctx.buffer(np.ascontiguousarray(paint[:, 2:]).tobytes())
        self.program["brow_line"].write(brow_line(face_model).tobytes())
        index_buffer = self.ctx.buffer(self.triangles.tobytes())
        self.vao = self.ctx.vertex_array(
            self.program,
            [(self.position_buffer, "3f", "in_position"), (self.normal_buffer, "3f", "in_normal"),
             (material_buffer, "1f", "in_material"), (rest_buffer, "2f", "in_rest"), (paint_buffer, "4f", "in_paint")],
            index_buffer=index_buffer,
        )
        self.fbo = self.ctx.simple_framebuffer((size, size), components=4)

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Area-weighted vertex normals: the sum of the adjacent triangles' cross products."""
        v0, v1, v2 = (vertices[self.triangles[:, i]] for i in range(3))
        normals = self._vertex_triangle @ np.cross(v1 - v0, v2 - v0)
        return normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)

    def render(self, vertices: np.ndarray, camera: Camera, appearance: Appearance) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (S, S, 3) and coverage mask (S, S) bool of a head mesh (N, 3) in cm."""
        assert camera.size == self.size
        with self.ctx:  # this renderer's context current: another made since would take its calls
            vertices = np.ascontiguousarray(vertices, np.float32)
            self.position_buffer.write(vertices.tobytes())
            self.normal_buffer.write(self.vertex_normals(vertices).astype(np.float32).tobytes())
            albedo = np.zeros((12, 3), np.float32)
            for slot, colour in enumerate(MATERIAL_COLOURS.values()):
                albedo[slot] = colour if colour is not None else appearance.skin
            albedo[list(MATERIAL_COLOURS).index("M_IrisLeft")] = appearance.iris
            albedo[list(MATERIAL_COLOURS).index("M_IrisRight")] = appearance.iris
            albedo[PUPIL_SLOT] = (0.02, 0.02, 0.02)
            set_uniforms(self.program, camera, albedo, appearance)
            self.fbo.use()
            self.fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self.ctx.enable(self.ctx.DEPTH_TEST)
            self.vao.render()
            rgba = np.frombuffer(self.fbo.read(components=4), np.uint8).reshape(self.size, self.size, 4)[::-1]
        return np.ascontiguousarray(rgba[..., :3]), rgba[..., 3] > 0

    def depth(self) -> np.ndarray:
        """Camera-space depth (S, S) of the last render (inf where nothing was drawn)."""
        with self.ctx:
            return linear_depth(self.fbo, self.size)
