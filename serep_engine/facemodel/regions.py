"""MultiREX-style evaluation regions on the face template, defined from its 68 landmarks.

forehead (with the eyes), nose, cheek and mouth are disjoint vertex masks inside the front of the face
(ICT's `narrow_face` part above the chin). MultiREX aligns the cheek and mouth together, so
`alignment_masks` gives their union for both.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from serep_engine.facemodel.ict import ICTModel

REGION_NAMES = ("forehead", "nose", "cheek", "mouth")
NARROW_FACE_VERTEX_COUNT = 6706
EYE_LINE_MARGIN_CM = 0.6  # the forehead region reaches this far below the lower eyelids


def _inside(points_xy: np.ndarray, polygon_xy: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as Polygon  # here: the capture imports this module, and runs without matplotlib

    return Polygon(polygon_xy).contains_points(points_xy)


@cache
def region_masks(model: ICTModel) -> dict[str, np.ndarray]:
    """Boolean (V,) masks over the face template vertices, one per region."""
    vertices = model.face_neutral
    lm = vertices[model.landmarks68]
    xy = vertices[:, :2]
    domain = np.zeros(len(vertices), bool)
    domain[:NARROW_FACE_VERTEX_COUNT] = True
    domain &= vertices[:, 1] > lm[8, 1] - 0.5

    bridge, left_wing, right_wing, tip_base = lm[27, :2], lm[31, :2], lm[35, :2], lm[33, :2]
    nose_outline = np.array([
        bridge + [-0.7, 0.3], bridge + [0.7, 0.3], right_wing + [0.7, 0.6], right_wing + [0.5, -0.4],
        tip_base + [0.0, -0.45], left_wing + [-0.5, -0.4], left_wing + [-0.7, 0.6],
    ])
    nose = domain & _inside(xy, nose_outline)

    lips = lm[48:60, :2]
    centre = lips.mean(0)
    offsets = lips - centre
    mouth_outline = centre + offsets * 1.35 + 0.6 * offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    mouth = domain & ~nose & _inside(xy, mouth_outline)

    eye_line = lm[[40, 41, 46, 47], 1].mean() - EYE_LINE_MARGIN_CM
    forehead = domain & ~nose & (vertices[:, 1] > eye_line)
    cheek = domain & ~nose & ~mouth & ~forehead
    return {"forehead": forehead, "nose": nose, "cheek": cheek, "mouth": mouth}


def alignment_masks(model: ICTModel) -> dict[str, np.ndarray]:
    """The vertices each region is rigidly aligned on: its own, except cheek and mouth share their union."""
    masks = region_masks(model)
    lower_face = masks["cheek"] | masks["mouth"]
    return {**masks, "cheek": lower_face, "mouth": lower_face}


def draw_regions(model: ICTModel, path) -> None:
    """Front view of the template with each region coloured (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vertices = model.face_neutral
    masks = region_masks(model)
    fig, ax = plt.subplots(figsize=(5, 6))
    ax.scatter(vertices[:, 0], vertices[:, 1], s=0.5, c="0.85")
    for name, colour in zip(REGION_NAMES, ("tab:blue", "tab:orange", "tab:green", "tab:red"), strict=True):
        ax.scatter(vertices[masks[name], 0], vertices[masks[name], 1], s=0.8, c=colour,
                   label=f"{name} ({masks[name].sum()})")
    lm = vertices[model.landmarks68]
    ax.scatter(lm[:, 0], lm[:, 1], s=8, c="k", marker="x", label="68 landmarks")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=7, markerscale=6)
    ax.set_title("SEREP evaluation regions (MultiREX-style)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
