"""`serep eval retarget`: fitting and transfer onto user meshes, against ground truth, with the MultiREX regions.

The test heads are held-out ICT identities (evaluation seeds; typical, stylised x2.5, warped out of the
identity model's span by a smooth non-linear deformation, and one shaped like Apple's ARKit reference face: thin
lips on a mouth that starts closed, eyes opening 1.4x taller than ICT's) made into "artist meshes": face only or
with the back of the head and neck (and eyeballs and teeth as separate parts), remeshed to other topologies and
densities (quads split on the other diagonal, vertex-clustering decimation, midpoint subdivision; about
2k to 100k vertices), rotated, scaled to metres or millimetres, moved off the origin. Every remeshing is a
sparse linear map M from the original vertices, so the ground truth of an expression on a test head is M
applied to the deformation-transfer expression on the original identity.

Per head: the code of each test expression (the expression model's E_exp on the identity's own template
mesh, what a perfect capture would output) is decoded onto the registered neutral (D_mesh) and carried to
the user's vertices (`Registration.to_user`); errors are taken on the user vertices that come from the
template's face regions (per region: Kabsch alignment, mean L2, mm). Two checks of what users see: a full blink
(ICT's eyeBlink shapes, encoded and decoded as above) should close the lids as ICT's own blink closes the
template's (the part of the opening left, at the user vertices under the iBUG lid points; 0.12-0.15 on the
template), and jawOpen should leave the upper lip where it is (the upper inner-lip points' error against the
truth, mm: a lip matched to the wrong side tears the mouth). The set is deterministic and generated on first use
into `$SEREP_CACHE/retarget-eval-v3/`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from serep_engine.eval.protocol import kabsch_align
from serep_engine.facemodel.expressions import sample_expressions
from serep_engine.facemodel.ict import EVAL_SEEDS, FACE_VERTEX_COUNT, MM_PER_CM, ICTModel, quads_to_triangles
from serep_engine.facemodel.identities import eval_identity, identity_shapes
from serep_engine.facemodel.regions import REGION_NAMES, alignment_masks, region_masks
from serep_engine.paths import cache_dir
from serep_engine.retarget.fit import decoded_blinks

SET_VERSION = "retarget-eval-v3"
HEAD_VERTICES, HEAD_POLYGONS = 11248, 11144  # ICT parts `face` + `head_and_neck`
EYES_AND_TEETH = ((17039, 21451), (21451, 24591))  # vertex ranges of ICT's teeth and eyeballs
BLENDER_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # +Y up, +Z forward -> +Z up, -Y forward
FIGURE_HEADS = (2, 4, 7, 11)
LANDMARK_SUCCESS_MM = 5.0  # automatic landmarks succeed when the fitted face's 68 land this close (median)

# (identity kind, eval index, parts, remeshing steps, units per cm, orientation, offset in user units)
HEADS = (
    ("typical", 0, "face", ("other_diagonal",), 1.0, "identity", (0.0, 0.0, 0.0)),
    ("typical", 1, "head", ("other_diagonal",), 0.01, "blender", (0.3, -1.2, 1.6)),
    ("typical", 2, "head", ("decimate:0.6",), 1.0, "random", (12.0, -40.0, 7.0)),
    ("typical", 3, "head", ("subdivide",), 0.01, "blender", (0.0, 0.0, 1.7)),
    ("typical", 4, "head+eyes+teeth", ("other_diagonal",), 1.0, "identity", (0.0, 160.0, 0.0)),
    ("stylised", 0, "head", ("decimate:0.4",), 10.0, "random", (50.0, 20.0, -300.0)),
    ("stylised", 1, "head", ("subdivide",), 1.0, "identity", (-8.0, 3.0, 25.0)),
    ("warped", 5, "head", ("decimate:0.35", "subdivide"), 0.01, "random", (1.0, 1.0, 1.0)),
    ("warped", 6, "head", ("other_diagonal",), 1.0, "blender", (0.0, 0.0, 0.0)),
    ("typical", 7, "head", ("decimate:0.8",), 0.01, "identity", (0.0, 0.0, 0.0)),
    ("typical", 8, "head", ("decimate:0.5", "subdivide", "subdivide"), 1.0, "random", (-3.0, 0.0, 0.0)),
    ("stylised", 2, "face+eyes", ("other_diagonal",), 0.01, "blender", (0.2, 0.1, 1.5)),
    ("reference", 9, "head", ("other_diagonal",), 0.01, "blender", (0.0, 0.0, 1.6)),
)
THIN_LIPS, TALL_EYES = 0.4, 1.4  # the reference-like head: lip height kept, eye opening height


# -- remeshing: each step returns (vertices, triangles, M) with new vertices = M @ old vertices -------------

def other_diagonal(vertices, polygons):
    """Quads split along their 1-3 diagonal (the template uses 0-2); triangles kept."""
    tri_a = polygons[:, [0, 1, 3]]
    quads = polygons[:, 3] >= 0
    tri_a[~quads] = polygons[~quads][:, [0, 1, 2]]
    triangles = np.concatenate([tri_a, polygons[quads][:, [1, 2, 3]]])
    return vertices, triangles.astype(np.int64), sp.identity(len(vertices), format="csr")


def subdivide(vertices, triangles):
    """Midpoint subdivision: a new vertex on every edge, each triangle split in four."""
    edges = np.sort(triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, inverse = np.unique(edges, axis=0, return_inverse=True)
    n = len(vertices)
    mid = n + inverse.reshape(-1, 3)  # (T, 3): midpoints of edges 01, 12, 20
    a, b, c = triangles.T
    new_triangles = np.concatenate([np.stack([a, mid[:, 0], mid[:, 2]], 1), np.stack([mid[:, 0], b, mid[:, 1]], 1),
                                    np.stack([mid[:, 2], mid[:, 1], c], 1), mid])
    rows = np.concatenate([np.arange(n), np.repeat(n + np.arange(len(unique)), 2)])
    cols = np.concatenate([np.arange(n), unique.ravel()])
    vals = np.concatenate([np.ones(n), np.full(2 * len(unique), 0.5)])
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(n + len(unique), n))
    return matrix @ vertices, new_triangles, matrix


def decimate(vertices, triangles, cell):
    """Vertex-clustering decimation: vertices pooled per grid cell (and per normal octant, so that the two
    lips or the two eyelids never merge); each pool is replaced by its original vertex nearest its mean."""
    from serep_engine.retarget.fit import _normals

    normals, _ = _normals(vertices, triangles)
    used = np.unique(triangles)
    keys = np.concatenate([np.floor(vertices / cell).astype(np.int64), (normals > 0).astype(np.int64)], 1)
    _, cluster = np.unique(keys[used], axis=0, return_inverse=True)
    labels = np.full(len(vertices), -1)
    labels[used] = cluster
    counts = np.bincount(cluster)
    means = np.zeros((len(counts), 3))
    np.add.at(means, cluster, vertices[used])
    means /= counts[:, None]
    distance = np.linalg.norm(vertices[used] - means[cluster], axis=1)
    order = np.lexsort((distance, cluster))
    first = order[np.r_[0, np.flatnonzero(np.diff(cluster[order])) + 1]]
    representative = used[first]  # per cluster
    new = labels[triangles]
    keep = (new[:, 0] != new[:, 1]) & (new[:, 1] != new[:, 2]) & (new[:, 0] != new[:, 2])
    new = new[keep]
    _, unique_rows = np.unique(np.sort(new, axis=1), axis=0, return_index=True)
    new = new[np.sort(unique_rows)]
    matrix = sp.csr_matrix((np.ones(len(representative)), (np.arange(len(representative)), representative)),
                           shape=(len(representative), len(vertices)))
    return vertices[representative], new, matrix


def warp(vertices):
    """A smooth non-linear deformation outside ICT's identity space: a wider brow and narrower jaw, a longer
    nose and a flatter profile (cm, ICT frame)."""
    x, y, z = vertices.T
    width = 1.0 + 0.12 * np.tanh((y - 2.0) / 8.0)
    out = np.stack([x * width, y + 0.04 * (y - 2.0) * np.exp(-(x**2) / 40.0), z * 0.92], 1)
    out[:, 2] += 0.35 * np.exp(-((x**2) + (y - 2.0) ** 2) / 18.0)
    return out


def reference_like(face_model: ICTModel, vertices):
    """Thin lips closed on the mouth's seam and eyes opening TALL_EYES x taller: the shapes on which the
    transfer once tore the mouth open and left blinks open (Apple's ARKit reference face; cm, ICT frame)."""
    lm, out = face_model.landmarks68, vertices.copy()
    upper, lower = vertices[lm[[60, 61, 62, 63, 64]]], vertices[lm[[60, 67, 66, 65, 64]]]
    seam = np.interp(vertices[:, 0], upper[:, 0], (upper[:, 1] + lower[:, 1]) / 2)
    half = np.ptp(upper[:, 0]) / 2 + 0.6
    across = np.clip(1 - (np.abs(vertices[:, 0] - upper[:, 0].mean()) - half + 0.6) / 0.6, 0, 1)
    lips = (np.abs(vertices[:, 1] - seam) < 1.3) & (vertices[:, 2] > vertices[lm[62], 2] - 1.5)
    out[lips, 1] = seam[lips] + (vertices[lips, 1] - seam[lips]) * (1 - (1 - THIN_LIPS) * across[lips])
    for eye in (range(36, 42), range(42, 48)):
        points = vertices[lm[list(eye)]]
        centre, width = points.mean(0), np.ptp(points[:, 0])
        d = out - centre
        near = np.exp(-((d[:, 0] / (0.7 * width)) ** 2 + d[:, 1] ** 2)) * (np.abs(d[:, 2]) < 1.5)
        out[:, 1] = centre[1] + d[:, 1] * (1 + (TALL_EYES - 1) * near)
    return out


@dataclass
class TestHead:
    name: str
    vertices: np.ndarray  # (V, 3) user units and frame
    triangles: np.ndarray
    remesh: sp.csr_matrix  # (V, N_original): user vertex = remesh @ original vertex (before the transform)
    original_face_neutral: np.ndarray  # (9409, 3) the identity's neutral, template frame (cm)
    identity_weights: np.ndarray | None  # ICT identity weights (None for warped heads)
    units_per_cm: float
    rotation: np.ndarray  # user = units_per_cm * original @ rotation.T + offset
    offset: np.ndarray


def _make_head(face_model: ICTModel, spec, seed: int) -> TestHead:
    kind, index, parts, steps, units, orientation, offset = spec
    weights = eval_identity(face_model, index, stylised=kind == "stylised")
    full = face_model.identity_neutral(weights, face_only=False).astype(np.float64)
    if kind == "warped":
        full = warp(full)
    elif kind == "reference":
        full = reference_like(face_model, full)
    if parts.startswith("face"):
        keep = np.arange(FACE_VERTEX_COUNT)
        polygons = face_model.polygons[:9230]
    else:
        keep = np.arange(HEAD_VERTICES)
        polygons = face_model.polygons[:HEAD_POLYGONS]
    if "eyes" in parts or "teeth" in parts:
        ranges = [EYES_AND_TEETH[1]] + ([EYES_AND_TEETH[0]] if "teeth" in parts else [])
        extra = np.concatenate([np.arange(*r) for r in ranges])
        owned = np.isin(face_model.polygons, np.r_[extra, -1]).all(1)
        keep = np.concatenate([keep, extra])
        polygons = np.concatenate([polygons, face_model.polygons[owned]])
    index_of = np.full(len(full) + 1, -1)
    index_of[keep] = np.arange(len(keep))
    polygons = np.where(polygons >= 0, index_of[polygons], -1)
    vertices = full[keep]
    select = sp.csr_matrix((np.ones(len(keep)), (np.arange(len(keep)), keep)), shape=(len(keep), len(full)))
    if steps and steps[0] == "other_diagonal":
        vertices, triangles, matrix = other_diagonal(vertices, polygons)
    else:
        triangles, matrix = quads_to_triangles(polygons), sp.identity(len(vertices), format="csr")
    for step in steps:
        if step.startswith("decimate"):
            vertices, triangles, step_matrix = decimate(vertices, triangles, float(step.split(":")[1]))
        elif step == "subdivide":
            vertices, triangles, step_matrix = subdivide(vertices, triangles)
        else:
            continue
        matrix = step_matrix @ matrix
    rng = np.random.default_rng(seed)
    if orientation == "random":
        from scipy.spatial.transform import Rotation

        rotation = Rotation.random(random_state=rng).as_matrix()
    elif orientation == "blender":
        rotation = BLENDER_UP
    else:
        rotation = np.eye(3)
    user = units * vertices @ rotation.T + np.asarray(offset)
    name = f"{kind}{index}-{parts}-{'+'.join(steps) or 'template'}-{len(user)}v"
    return TestHead(name, user, triangles.astype(np.int64), (matrix @ select).tocsr(), full[:FACE_VERTEX_COUNT],
                    None if kind in ("warped", "reference") else weights,  # None: truth by transfer onto the neutral
                    units, rotation, np.asarray(offset, np.float64))


def load_heads(face_model: ICTModel, log=None) -> list[TestHead]:
    """The fixed test set, generated into the cache on first use."""
    folder = cache_dir() / SET_VERSION
    heads = []
    for number, spec in enumerate(HEADS):
        path = folder / f"head{number:02d}.npz"
        if not path.exists():
            head = _make_head(face_model, spec, seed=EVAL_SEEDS[-1] - number)
            folder.mkdir(parents=True, exist_ok=True)
            m = head.remesh
            np.savez(path, name=head.name, vertices=head.vertices, triangles=head.triangles, data=m.data,
                     indices=m.indices, indptr=m.indptr, shape=np.array(m.shape), neutral=head.original_face_neutral,
                     identity=head.identity_weights if head.identity_weights is not None else np.zeros(0),
                     units=head.units_per_cm, rotation=head.rotation, offset=head.offset)
            if log:
                log(f"made test head {number}: {head.name}")
        with np.load(path, allow_pickle=False) as d:
            remesh = sp.csr_matrix((d["data"], d["indices"], d["indptr"]), shape=tuple(d["shape"]))
            heads.append(TestHead(str(d["name"]), d["vertices"], d["triangles"], remesh, d["neutral"],
                                  d["identity"] if len(d["identity"]) else None, float(d["units"]),
                                  d["rotation"], d["offset"]))
    return heads


def head_shapes(face_model: ICTModel, head: TestHead) -> np.ndarray:
    """(53, 9409, 3) deformation-transfer expression shapes of the head's original identity."""
    if head.identity_weights is not None:
        return identity_shapes(face_model, head.identity_weights)
    from serep_engine.retarget.arkit import neutral_shapes

    return neutral_shapes(face_model, head.original_face_neutral)


def user_regions(face_model: ICTModel, head: TestHead) -> tuple[dict, dict]:
    """Region and alignment masks over the head's user vertices: a vertex belongs where the original vertex
    that weighs most in its remeshing row belongs."""
    dominant = np.asarray(head.remesh.argmax(axis=1)).ravel()
    inside = dominant < FACE_VERTEX_COUNT
    clipped = np.minimum(dominant, FACE_VERTEX_COUNT - 1)

    def lift(masks):
        return {name: inside & mask[clipped] for name, mask in masks.items()}

    return lift(region_masks(face_model)), lift(alignment_masks(face_model))


def head_errors_mm(face_model, head: TestHead, predicted: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per-expression region errors (mm) for (E, V, 3) user-frame displacements on one head."""
    regions, aligned_on = user_regions(face_model, head)
    neutral = head.vertices.astype(np.float64)
    errors = {}
    for name in REGION_NAMES:
        align, region = aligned_on[name], regions[name]
        moved = kabsch_align(neutral[align] + predicted[:, align], neutral[align] + truth[:, align])
        distance = np.linalg.norm(moved[:, region[align]] - (neutral[region] + truth[:, region]), axis=2)
        errors[name] = distance.mean(1) * MM_PER_CM / head.units_per_cm
    return errors


@torch.no_grad()
def evaluate_retarget(face_model: ICTModel, expression_model, n_expressions: int = 12, figure=None,
                      use_cache: bool = False, log=None) -> dict:
    from serep_engine.retarget import NoFaceFoundError, fit_target

    heads = load_heads(face_model, log)
    rng = np.random.default_rng(EVAL_SEEDS[-1] - 100)
    per_region = {name: [] for name in REGION_NAMES}
    per_check: dict[str, list[float]] = {}
    auto_ok, seconds, shown = [], [], []
    for head in heads:
        expressions = sample_expressions(rng, n_expressions)
        shapes = head_shapes(face_model, head)
        truth_face = np.einsum("ek,kvi->evi", expressions, shapes)  # (E, 9409, 3) on the identity, cm
        full = np.zeros((n_expressions, head.remesh.shape[1], 3))
        full[:, :FACE_VERTEX_COUNT] = truth_face
        truth = np.stack([head.remesh @ f for f in full]) @ head.rotation.T * head.units_per_cm
        started = time.perf_counter()
        true_landmarks = head.units_per_cm * head.original_face_neutral[face_model.landmarks68] @ head.rotation.T
        true_landmarks += head.offset
        try:
            registration = fit_target(face_model, head.vertices, head.triangles, use_cache=use_cache)
            found = registration.similarity.to_user(registration.neutral[face_model.landmarks68])
            error = np.median(np.linalg.norm(found - true_landmarks, axis=1)) * MM_PER_CM / head.units_per_cm
            auto_ok.append(bool(error < LANDMARK_SUCCESS_MM))
            note = f"landmarks {error:.1f} mm"
        except NoFaceFoundError as failure:
            auto_ok.append(False)
            note = f"automatic landmarks failed ({failure}); scored with given landmarks"
            registration = fit_target(face_model, head.vertices, head.triangles, landmarks=true_landmarks,
                                      use_cache=use_cache)
        registration = registration.with_closing_lids(face_model, decoded_blinks(face_model, expression_model,
                                                                                registration.neutral))
        seconds.append(time.perf_counter() - started)
        identity_basis = expression_model.identity_basis(head.original_face_neutral)
        codes = expression_model.encode_displacements(torch.from_numpy(truth_face).float(), identity_basis)
        decoded = expression_model.decode_with_basis(codes, expression_model.identity_basis(registration.neutral))
        predicted = registration.to_user(decoded.numpy())
        errors = head_errors_mm(face_model, head, predicted.astype(np.float64), truth)
        checks = user_checks(face_model, expression_model, head, registration, shapes)
        for name, value in checks.items():
            per_check.setdefault(name, []).append(value)
        for name in REGION_NAMES:
            per_region[name].append(errors[name])
        summary = {name: round(float(errors[name].mean()), 3) for name in REGION_NAMES}
        if log:
            still = head_errors_mm(face_model, head, np.zeros_like(truth), truth)  # scale: no motion at all
            log(f"{head.name}: {summary}, mean {np.mean(list(summary.values())):.3f} mm "
                f"(no-motion baseline {np.mean([still[n].mean() for n in REGION_NAMES]):.2f} mm), "
                f"fit {seconds[-1]:.1f} s, {note}, surface {registration.fit_residual_mm:.2f} mm, "
                + ", ".join(f"{name} {value:.3f}" for name, value in checks.items()))
        shown.append((head, registration, predicted, truth))
    regions = {name: round(float(np.mean(np.concatenate(per_region[name]))), 4) for name in REGION_NAMES}
    regions["mean"] = round(float(np.mean([regions[name] for name in REGION_NAMES])), 4)
    if figure is not None:
        retarget_figure(face_model, [shown[i] for i in FIGURE_HEADS if i < len(shown)], figure)
    checks = {"blink_open_mean": round(float(np.mean(per_check["blink_open"])), 4),
              "blink_open_worst": round(float(np.max(per_check["blink_open"])), 4),
              "blink_open_reference": round(per_check["blink_open"][-1], 4),
              "upper_lip_jaw_error_mm_worst": round(float(np.max(per_check["upper_lip_mm"])), 3),
              "upper_lip_jaw_error_mm_reference": round(per_check["upper_lip_mm"][-1], 3)}
    return {"regions_mm": regions, "checks": checks, "auto_landmark_success": round(float(np.mean(auto_ok)), 4),
            "n_meshes": len(heads), "seconds_per_mesh": round(float(np.mean(seconds)), 2)}


@torch.no_grad()
def user_checks(face_model: ICTModel, expression_model, head: TestHead, registration, shapes) -> dict:
    """What users see on the head (module docstring): the part of the lids' opening a full blink leaves (mean of
    both eyes, along the opening: below 0 where the lids pass each other) and the upper inner lip's error under
    jawOpen (mm). The points are the user vertices nearest the registered face's iBUG lid and lip points among
    those that move with the face (not the eyeballs)."""
    from scipy.spatial import cKDTree

    from serep_engine.retarget.fit import EYES

    names = list(face_model.expression_names)
    template_basis = expression_model.identity_basis(face_model.face_neutral)
    user_basis = expression_model.identity_basis(registration.neutral)
    rest = head.vertices.astype(np.float64)
    moving = np.flatnonzero(np.asarray(registration.transfer.sum(axis=1)).ravel() > 0.5)
    tree = cKDTree(rest[moving])

    def at(points):
        placed = registration.similarity.to_user(registration.neutral[face_model.landmarks68[list(points)]])
        return moving[tree.query(placed)[1]]

    def moved(name):
        shape = torch.from_numpy(face_model.face_expression_basis[names.index(name)][None]).float()
        code = expression_model.encode_displacements(shape, template_basis)
        return registration.to_user(expression_model.decode_with_basis(code, user_basis).numpy())[0]

    left = []
    for blink, (upper, lower) in EYES.items():
        d, up, low = moved(blink), at(upper), at(lower)
        opening = rest[up] - rest[low]
        along = opening / np.linalg.norm(opening, axis=1, keepdims=True)
        closed = np.einsum("ni,ni->n", opening + d[up] - d[low], along)
        left.append(closed.mean() / np.linalg.norm(opening, axis=1).mean())
    full = np.zeros((head.remesh.shape[1], 3))
    full[:FACE_VERTEX_COUNT] = shapes[names.index("jawOpen")]
    truth = (head.remesh @ full) @ head.rotation.T * head.units_per_cm
    lip = at([61, 62, 63])
    error = np.linalg.norm(moved("jawOpen")[lip] - truth[lip], axis=1).mean() * MM_PER_CM / head.units_per_cm
    return {"blink_open": float(np.mean(left)), "upper_lip_mm": float(error)}


def _project(renderer, rotation, points):
    """Pixels of user-frame points in a MeshRenderer view."""
    from serep_engine.render.head import HEAD_CENTRE

    return renderer.camera.project((points - renderer.centre) * renderer.scale @ rotation.T + HEAD_CENTRE)[0]


def retarget_figure(face_model: ICTModel, shown, path) -> None:
    """Per head: the automatic landmarks, the registered template over the mesh, and a transferred expression
    (the test expression with the most motion) beside its ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from serep_engine.render.mesh import MeshRenderer

    fig, axes = plt.subplots(len(shown), 4, figsize=(12, 3.1 * len(shown)), squeeze=False)
    for row, (head, registration, predicted, truth) in zip(axes, shown, strict=True):
        rotation = registration.similarity.rotation
        frame = int(np.argmax(np.linalg.norm(truth, axis=2).mean(1)))
        renderer = MeshRenderer(head.vertices, head.triangles, 320)
        images = [renderer.render(rotation)]
        landmarks = _project(renderer, rotation, head.vertices[registration.landmarks68])
        template = _project(renderer, rotation, registration.similarity.to_user(registration.neutral))
        for displacement in (predicted[frame], truth[frame]):
            renderer.set_vertices(head.vertices + displacement)
            images.append(renderer.render(rotation))
        renderer.release()
        row[0].imshow(images[0])
        row[0].scatter(*landmarks.T, s=6, c="lime", edgecolors="k", linewidths=0.3)
        row[0].set_title(f"{head.name}\n68 landmarks found", fontsize=7)
        row[1].imshow(images[0])
        row[1].scatter(*template[::3].T, s=0.3, c="tab:blue", alpha=0.6)
        row[1].set_xlim(0, renderer.size)
        row[1].set_ylim(renderer.size, 0)
        row[1].set_title(f"registered template (surface {registration.fit_residual_mm:.2f} mm)", fontsize=7)
        error = head_errors_mm(face_model, head, predicted[frame:frame + 1].astype(np.float64), truth[frame:frame + 1])
        row[2].imshow(images[1])
        row[2].set_title(f"transferred expression ({np.mean([e[0] for e in error.values()]):.2f} mm)", fontsize=7)
        row[3].imshow(images[2])
        row[3].set_title("ground truth (deformation transfer)", fontsize=7)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
