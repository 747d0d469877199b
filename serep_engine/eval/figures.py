"""Figures for the evaluation commands (PNG, matplotlib's Agg backend)."""

from __future__ import annotations

import numpy as np

from serep_engine.facemodel.ict import MM_PER_CM, ICTModel
from serep_engine.facemodel.regions import region_masks


def retarget_figure(face_model: ICTModel, typical, typical_predictions, stylised, stylised_predictions, path,
                    n_expressions: int = 2) -> None:
    """Held-out expressions retargeted onto three identities (two typical, one stylised): the ground truth
    (coloured by displacement), and the per-vertex error of SEREP and of naive addition (heat maps, mm)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    face = np.any(np.stack(list(region_masks(face_model).values())), axis=0)
    rows = [("typical", typical, typical_predictions, 0), ("typical", typical, typical_predictions, 1),
            ("stylised", stylised, stylised_predictions, 0)]
    columns = ["ground truth |d| (mm)", "SEREP error (mm)", "naive error (mm)"]
    fig, axes = plt.subplots(len(rows), 3 * n_expressions, figsize=(2.2 * 3 * n_expressions, 2.8 * len(rows)))
    for r, (label, group, predictions, source) in enumerate(rows):
        n = len(group.neutrals)
        target = (source + 1) % n
        retarget, truth = predictions[source]
        naive = group.truth_on(source, source)
        neutral = group.neutrals[target]
        for e in range(n_expressions):
            frames = np.argsort(-np.abs(truth).sum((1, 2)))  # the strongest expressions read best
            f = frames[e]
            values = [np.linalg.norm(truth[f], axis=1), np.linalg.norm(retarget[f] - truth[f], axis=1),
                      np.linalg.norm(naive[f] - truth[f], axis=1)]
            error_max = max(values[2][face].max(), 1e-3) * MM_PER_CM
            for c, value in enumerate(values):
                ax = axes[r, 3 * e + c]
                shown = neutral + (truth[f] if c == 0 else 0)
                vmax = value[face].max() * MM_PER_CM if c == 0 else error_max
                sc = ax.scatter(shown[face, 0], shown[face, 1], c=value[face] * MM_PER_CM, s=0.3,
                                cmap="viridis" if c == 0 else "inferno", vmin=0, vmax=vmax)
                ax.set_aspect("equal")
                ax.axis("off")
                fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.01)
                if r == 0:
                    ax.set_title(f"expr {e + 1}: {columns[c]}", fontsize=7)
            axes[r, 0].text(-0.1, 0.5, f"{label} id {target}", transform=axes[r, 0].transAxes, rotation=90,
                            va="center", ha="right", fontsize=8)
    fig.suptitle("Held-out expressions retargeted onto held-out identities: truth, SEREP and naive errors")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
