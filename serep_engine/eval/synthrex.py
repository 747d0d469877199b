"""SynthREX: the MultiREX protocol on held-out synthetic subjects.

MultiREX needs the Multiface captures; SynthREX rebuilds its protocol on subjects the models never saw:
identities from evaluation seeds, appearance and backgrounds from their own seeds, 150-frame continuous
expression sequences (winks, asymmetric smiles, jaw open, funnel, pucker and sampled expressions, eased
between keyframes), each rendered from five views: frontal (0 deg yaw), angled (+-40) and profile (+-60).
Ground truth: the subject's neutral and its identity-specific (deformation-transfer) expression meshes.

The set is generated deterministically and cached in `$SEREP_CACHE/synthrex-v2/`: per subject
`subject_XX.npz` (identity weights, per-frame ARKit weights) and per view `subject_XX_view_YAW.npz`
(frames as JPEG bytes). A method maps a view's frames to per-frame expression meshes on the subject's
neutral; errors are the region protocol of `eval/protocol.py`, averaged over frames and videos.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serep_engine.eval.protocol import region_errors_mm, summarise
from serep_engine.facemodel.expressions import INDEX, sample_expression
from serep_engine.facemodel.ict import EVAL_SEEDS, FACE_VERTEX_COUNT, ICTModel
from serep_engine.facemodel.identities import identity_shapes
from serep_engine.paths import cache_dir
from serep_engine.synth.shards import load_frames, save_frames

VERSION = "synthrex-v2"  # v2: face paint on the renders (render/head.py)
N_SUBJECTS = 8
N_FRAMES = 150
RENDER_SIZE = 320
VIEW_GROUPS = {"frontal": (0,), "angled": (-40, 40), "profile": (-60, 60)}
FIGURE_VIDEO = (0, 40)  # (subject, yaw) whose frames the figure shows
SUBJECT_SEED_OFFSET = 200_000  # evaluation seeds of SynthREX's identities and appearances
SCRIPTED = (
    {"eyeBlink_L": 1.0},  # wink
    {"mouthSmile_L": 0.9, "cheekSquint_L": 0.5, "mouthSmile_R": 0.2},  # asymmetric smile
    {"jawOpen": 0.8, "mouthLowerDown_L": 0.3, "mouthLowerDown_R": 0.3},
    {"mouthFunnel": 0.9, "jawOpen": 0.2},
    {"mouthPucker": 1.0},
)
MethodFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (frames (F,H,W,3) RGB, neutral (V,3)) -> (F,V,3)


def synthrex_dir() -> Path:
    return cache_dir() / VERSION


def expression_sequence(rng: np.random.Generator, n_frames: int = N_FRAMES) -> np.ndarray:
    """(F, 53) weights easing between keyframes: neutral, the scripted actions (shuffled) and samples."""
    keys = [np.zeros(53, np.float32)]
    scripted = [SCRIPTED[i] for i in rng.permutation(len(SCRIPTED))]
    while len(keys) < 12:
        if scripted and rng.random() < 0.6:
            weights = np.zeros(53, np.float32)
            for name, value in scripted.pop().items():
                weights[INDEX[name]] = value
            keys.append(weights)
        else:
            keys.append(sample_expression(rng, neutral_probability=0.2))
    times = np.linspace(0, n_frames - 1, len(keys))
    frame = np.arange(n_frames)
    segment = np.clip(np.searchsorted(times, frame, side="right") - 1, 0, len(keys) - 2)
    local = (frame - times[segment]) / (times[segment + 1] - times[segment])
    ease = local * local * (3 - 2 * local)
    keys = np.stack(keys)
    return (keys[segment] * (1 - ease[:, None]) + keys[segment + 1] * ease[:, None]).astype(np.float32)


def subject_truth(face_model: ICTModel, index: int) -> dict:
    """The subject's identity weights, neutral (face template), per-frame weights and truth meshes."""
    path = synthrex_dir() / f"subject_{index:02d}.npz"
    with np.load(path, allow_pickle=False) as data:
        identity, weights = data["identity"], data["weights"]
    neutral = face_model.identity_neutral(identity)
    shapes = identity_shapes(face_model, identity)
    return {"identity": identity, "weights": weights, "neutral": neutral,
            "meshes": neutral + np.einsum("fk,kvi->fvi", weights, shapes)}


def generate(face_model: ICTModel, subjects: int = N_SUBJECTS, log=print) -> Path:
    """Render the set, or its first `subjects` subjects (idempotent: finished files are kept)."""
    out = synthrex_dir()
    out.mkdir(parents=True, exist_ok=True)
    for index in range(subjects):
        seed = EVAL_SEEDS[SUBJECT_SEED_OFFSET + index]
        rng = np.random.default_rng(seed)
        identity = face_model.identity_weights(seed)
        weights = expression_sequence(rng)
        subject_path = out / f"subject_{index:02d}.npz"
        if not subject_path.exists():
            np.savez(subject_path, identity=identity, weights=weights)
        render_views(face_model, identity, weights, rng, seed,
                     lambda yaw, i=index: out / f"subject_{i:02d}_view_{yaw:+03d}.npz",
                     lambda yaw, i=index: log(json.dumps({"type": "progress", "stage": "synthrex", "subject": i,
                                                          "yaw": yaw})))
    return out


def render_views(face_model: ICTModel, identity: np.ndarray, weights: np.ndarray, rng: np.random.Generator, seed: int,
                 path_of: Callable[[int], Path], done: Callable[[int], None] = lambda yaw: None) -> None:
    """One subject's (F, 53) expression sequence rendered from the five views, each to `path_of(yaw)` (kept if there):
    random appearance and background from `rng`, a little head motion, the degradations of training renders."""
    from serep_engine.render.head import Camera, HeadRenderer
    from serep_engine.synth import augment
    from serep_engine.synth.dataset import SynthGenerator

    renderer = HeadRenderer(face_model, RENDER_SIZE)
    shapes = identity_shapes(face_model, identity)
    head = face_model.identity_neutral(identity, face_only=False)
    appearance = SynthGenerator.random_appearance(rng)
    background = augment.procedural_background(rng, RENDER_SIZE)
    meshes = head + np.tensordot(weights, face_model.expression_basis, axes=1)
    meshes[:, :FACE_VERTEX_COUNT] = head[:FACE_VERTEX_COUNT] + np.einsum("fk,kvi->fvi", weights, shapes)
    for yaw in sorted(y for group in VIEW_GROUPS.values() for y in group):
        if path_of(yaw).exists():
            continue
        view_rng = np.random.default_rng([seed, yaw + 180])
        frames = []
        for f, mesh in enumerate(meshes):
            wobble = np.sin(2 * np.pi * f / N_FRAMES * np.array([1.0, 2.0]))  # a little head motion
            camera = Camera(RENDER_SIZE, focal=2.5 * RENDER_SIZE, distance=2.5 * 16.0 / 0.45,
                            yaw=yaw + 3 * wobble[0], pitch=3 * wobble[1], roll=2 * wobble[0])
            image, mask = renderer.render(mesh, camera, appearance)
            frames.append(augment.degrade(np.where(mask[..., None], image, background), view_rng))
        save_frames(path_of(yaw), frames)
        done(yaw)


def view_frames(index: int, yaw: int) -> np.ndarray:
    return load_frames(synthrex_dir() / f"subject_{index:02d}_view_{yaw:+03d}.npz")["frames"]


def evaluate_method(face_model: ICTModel, name: str, method: MethodFn, subjects: int = N_SUBJECTS,
                    frames: int = N_FRAMES, log=print) -> dict:
    """The contract's JSON object for one method (`frames` < 150 evaluates a prefix, for quick checks), plus
    `_predictions` of the figure's video."""
    generate(face_model, subjects, log=log)
    per_region = {r: [] for r in ("forehead", "nose", "cheek", "mouth")}
    per_view = {group: [] for group in VIEW_GROUPS}
    predictions = None
    for index in range(subjects):
        truth = subject_truth(face_model, index)
        for group, yaws in VIEW_GROUPS.items():
            for yaw in yaws:
                predicted = method(view_frames(index, yaw)[:frames], truth["neutral"])
                errors = region_errors_mm(face_model, predicted, truth["meshes"][:frames])
                for region, values in errors.items():
                    per_region[region].append(values)
                per_view[group].append(np.mean([values for values in errors.values()], axis=0))
                if (index, yaw) == FIGURE_VIDEO:
                    predictions = predicted
    regions = summarise({region: np.concatenate(values) for region, values in per_region.items()})
    views = {group: round(float(np.mean(np.concatenate(values))), 4) for group, values in per_view.items()}
    n_frames = sum(len(v) for v in per_region["forehead"])
    return {"method": name, "regions_mm": regions, "views_mm": views, "n_frames": n_frames,
            "_predictions": predictions}
