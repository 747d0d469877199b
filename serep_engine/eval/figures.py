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


def capture_figure(face_model: ICTModel, results: list[dict], path) -> None:
    """Per-region and per-view bars for each method, and a strip of frames of one video: input, ground truth,
    each method's prediction and its error heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from serep_engine.eval.synthrex import FIGURE_VIDEO, subject_truth, view_frames

    subject, yaw = FIGURE_VIDEO
    truth = subject_truth(face_model, subject)
    frames = view_frames(subject, yaw)
    shown = np.linspace(0, len(results[0]["_predictions"]) - 1, 4).astype(int)
    face = np.any(np.stack(list(region_masks(face_model).values())), axis=0)
    columns = 2 + 2 * len(results)
    fig = plt.figure(figsize=(2.0 * columns, 2.2 * (len(shown) + 2)))
    grid = fig.add_gridspec(len(shown) + 3, columns, hspace=0.35)
    for i, key in enumerate(("regions_mm", "views_mm")):
        ax = fig.add_subplot(grid[0:2, i * columns // 2:(i + 1) * columns // 2])
        labels = [k for k in results[0][key] if k != "mean"]
        width = 0.8 / len(results)
        for m, result in enumerate(results):
            ax.bar(np.arange(len(labels)) + m * width, [result[key][k] for k in labels], width, label=result["method"])
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
        ax.set_ylabel("error (mm)")
        ax.set_title(f"SynthREX {key.split('_')[0]} (mean over frames and videos)", fontsize=8)
        ax.legend(fontsize=7)
    for row, f in enumerate(shown, start=3):
        panels = [("input", frames[f], None), ("truth", truth["meshes"][f] - truth["neutral"], None)]
        for result in results:
            predicted = result["_predictions"][f]
            panels.append((result["method"], predicted - truth["neutral"], None))
            panels.append((f"{result['method']} error", None, np.linalg.norm(predicted - truth["meshes"][f], axis=1)))
        for c, (title, content, error) in enumerate(panels):
            ax = fig.add_subplot(grid[row, c])
            ax.axis("off")
            if row == 3:
                ax.set_title(title, fontsize=7)
            if c == 0:
                ax.imshow(content)
                continue
            mesh = truth["neutral"] + (content if content is not None else 0)
            colour = np.linalg.norm(content, axis=1) if error is None else error
            ax.scatter(mesh[face, 0], mesh[face, 1], c=colour[face] * MM_PER_CM, s=0.2,
                       cmap="viridis" if error is None else "inferno", vmin=0, vmax=8 if error is None else 4)
            ax.set_aspect("equal")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def real_figure(methods: dict[str, dict], path) -> None:
    """`serep eval real`'s result as bars: per part, each measure's correlation per method (photos: lip gap,
    eyes, mouth width, brows; clips: the same and the winks' same-side fraction; takes: each listed shape)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [("photos", lambda p, m: p.get(m, {}).get("corr")), ("clips", lambda p, m: p.get(m, {}).get("corr")),
             ("takes", lambda p, m: p.get("shapes", {}).get(m))]
    fig, axes = plt.subplots(len(parts), 1, figsize=(12, 3.2 * len(parts)))
    for ax, (part, value) in zip(axes, parts):
        measures = []
        for result in methods.values():
            keys = (result.get(part) or {}).get("shapes", {}) if part == "takes" else (result.get(part) or {})
            measures += [k for k in keys if k not in measures and k != "n" and k != "winks"]
        width = 0.8 / max(len(methods), 1)
        for i, (name, result) in enumerate(methods.items()):
            values = [value(result.get(part) or {}, m) for m in measures]
            ax.bar(np.arange(len(measures)) + i * width, [v if v is not None else 0 for v in values], width,
                   label=name)
        ax.set_xticks(np.arange(len(measures)) + 0.4 - width / 2, measures, rotation=20, fontsize=8)
        ax.set_ylim(-0.2, 1.0)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylabel(f"{part}: correlation")
    axes[0].legend(ncol=len(methods), fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
