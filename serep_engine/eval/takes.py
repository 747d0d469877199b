"""`serep eval real`, the takes part: real iPhone ARKit motion (Live Link Face takes) in the renderer's appearance.

Per take (a folder of Live Link Face CSVs, contract/takes.py), the WINDOW frames (30 fps, real timing) whose listed
shapes move most; its 52 ARKit curves drive ICT's expression shapes (split halves both at the ARKit weight,
deformation-transferred onto a held-out identity, EVAL_SEEDS from SEED_OFFSET), rendered from SynthREX's five views
by the same renderer (eval/synthrex.py: render_views). Each method's ARKit weights (mediapipe's own scores for
`mediapipe_blendshapes`; the ARKit solve of the decoded mesh for the others) against the take's: per listed shape
the Pearson correlation per video, the mean over the videos whose take moves that shape (MOVES), with how many; and
the SynthREX region errors (mm) of the decoded meshes.
No take is trained on: every take scored here is held out.

Renders are cached per take (a digest of the file, the window and the identity's seed) in
`$SEREP_CACHE/takes-eval-v2/`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from serep_engine.contract import TAKE_SUFFIXES, TakeError, read_take
from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.facemodel.expressions import ict_weights
from serep_engine.facemodel.ict import EVAL_SEEDS, ICTModel
from serep_engine.paths import cache_dir, data_dir

VERSION = "takes-eval-v2"  # v2: face paint on the renders (render/head.py)
WINDOW = 150
SEED_OFFSET = 300_000
SHAPES = ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel",
          "mouthPucker", "browInnerUp", "browDownLeft", "browDownRight", "mouthLeft", "mouthRight")
# A shape is scored in a video only where the take moves it: its curve's standard deviation over the window at least
# this. A key at rest jitters by 0.002-0.022 in the four takes here (mouthLeft's largest twitch, 0.17 for a few frames,
# is 0.015), and a correlation with that measures the sensor's noise, not the method.
MOVES = 0.05


def default_takes() -> Path:
    return data_dir() / "real" / "arkit_takes"


def busiest_window(weights: np.ndarray, found: np.ndarray, length: int = WINDOW) -> int:
    """The first row of the `length` rows (all tracked where possible) whose listed shapes move most (the sum of
    their frame-to-frame changes)."""
    listed = weights[:, [ARKIT_NAMES.index(name) for name in SHAPES]]
    best, start = -1.0, 0
    for first in range(0, max(len(weights) - length, 0) + 1, 10):
        rows = slice(first, first + length)
        if not found[rows].all() and found.sum() >= length:
            continue
        score = float(np.nansum(np.abs(np.diff(listed[rows], axis=0))))
        if score > best:
            best, start = score, first
    return start


def prepare(face_model: ICTModel, path: Path, index: int) -> dict | None:
    """A take's window, identity and renders (cached): {"name", "identity", "arkit", "views": {yaw: path}}; None
    when the file is not a usable take."""
    from serep_engine.eval.synthrex import VIEW_GROUPS, render_views
    from serep_engine.track.filters import fill_gaps

    try:
        take = read_take(path)
    except (TakeError, ValueError, OSError):
        return None
    if take.found.sum() < 2:
        return None
    start = busiest_window(take.weights, take.found)
    found = take.found[start:start + WINDOW]
    arkit = np.clip(fill_gaps(take.weights[start:start + WINDOW], found), 0.0, 1.0).astype(np.float32)
    seed = EVAL_SEEDS[SEED_OFFSET + index]
    key = hashlib.sha1(path.read_bytes() + f"{VERSION} {start} {WINDOW} {seed}".encode()).hexdigest()[:16]
    folder = cache_dir() / VERSION / key
    folder.mkdir(parents=True, exist_ok=True)
    identity = face_model.identity_weights(seed)
    views = {yaw: folder / f"view_{yaw:+03d}.npz" for group in VIEW_GROUPS.values() for yaw in group}
    render_views(face_model, identity, ict_weights(face_model, arkit), np.random.default_rng(seed), seed,
                 lambda yaw: views[yaw])
    return {"name": path.name, "identity": identity, "arkit": arkit, "views": views}


def mediapipe_scores(frames: np.ndarray, fps: float = 30.0) -> np.ndarray:
    """(F, 52) the Face Landmarker's blendshape scores in ARKIT_NAMES order over frames (zero without a face)."""
    from serep_engine.eval.real import scores_of
    from serep_engine.track.tracking import FaceTracker

    out = np.zeros((len(frames), len(ARKIT_NAMES)), np.float32)
    with FaceTracker(video=True, max_faces=1, fps=fps) as tracker:
        for f, rgb in enumerate(frames):
            seen = tracker.track(rgb)
            if seen.found:
                scores = scores_of(seen)
                out[f] = [scores.get(name, 0.0) for name in ARKIT_NAMES]
    return out


def evaluate_takes(face_model: ICTModel, methods: list[str], directory: str | Path | None = None,
                   log=None) -> dict[str, dict]:
    """{method: {"n": takes, "shapes": {name: corr}, "regions_mm": {...}}} on the takes of `directory`."""
    from serep_engine.eval.baselines import METHODS as SYNTHREX_METHODS
    from serep_engine.eval.real import blendshape_meshes
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.retarget.arkit import ARKitSolver
    from serep_engine.synth.shards import load_frames

    directory = Path(directory or default_takes())
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in TAKE_SUFFIXES) if directory.is_dir() else []
    made = {name: SYNTHREX_METHODS[name](face_model) for name in methods if name in SYNTHREX_METHODS}
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    corrs = {name: {} for name in methods}
    errors = {name: {} for name in methods}
    used = 0
    for index, path in enumerate(paths):
        take = prepare(face_model, path, index)
        if take is None:
            if log:
                log(f"{path.name}: not a usable take, skipped")
            continue
        used += 1
        neutral, truth = take_meshes(face_model, take)
        solver = ARKitSolver(face_model, neutral)
        for yaw, view in take["views"].items():
            frames = load_frames(view)["frames"]
            for name in methods:
                if name == "mediapipe_blendshapes":
                    weights = mediapipe_scores(frames)
                    meshes = blendshape_meshes(face_model, expression_model,
                                               [dict(zip(ARKIT_NAMES, w.tolist())) for w in weights], neutral)
                elif hasattr(made[name], "keys"):  # the capture's keys as the product solves them
                    meshes, weights = made[name].keys(frames, neutral, solver)
                else:
                    meshes = made[name](frames, neutral)
                    weights = solver.solve(meshes - neutral)
                score_video(face_model, meshes, weights, truth, take["arkit"], corrs[name], errors[name])
        if log:
            log(f"{path.name}: frames {WINDOW} from the busiest window, {len(take['views'])} views")
    out = {}
    for name in methods:
        if not used:
            out[name] = {"n": 0}
            continue
        out[name] = {"n": used} | summary(corrs[name], errors[name])
    return out


def take_meshes(face_model: ICTModel, take: dict) -> tuple[np.ndarray, np.ndarray]:
    """A prepared take's identity neutral (V, 3) and its true meshes (F, V, 3): ICT's shapes at the take's weights."""
    from serep_engine.facemodel.identities import identity_shapes

    neutral = face_model.identity_neutral(take["identity"])
    return neutral, neutral + np.tensordot(ict_weights(face_model, take["arkit"]),
                                           identity_shapes(face_model, take["identity"]), axes=1)


def score_video(face_model: ICTModel, meshes: np.ndarray, weights: np.ndarray, truth: np.ndarray, arkit: np.ndarray,
                corrs: dict[str, list], errors: dict[str, list]) -> None:
    """Adds one video's scores: per listed shape the correlation of the method's ARKit `weights` with the take's
    `arkit` (0 where the take moves the shape and the method does not; none where the take does not move it:
    MOVES), and per region the errors of its `meshes` against the `truth`."""
    from serep_engine.eval.protocol import region_errors_mm

    for region, values in region_errors_mm(face_model, meshes, truth).items():
        errors.setdefault(region, []).append(values)
    for shape in SHAPES:
        column = ARKIT_NAMES.index(shape)
        a, b = weights[:, column], arkit[:, column]
        if b.std() >= MOVES:
            corrs.setdefault(shape, []).append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 1e-6 else 0.0)


def summary(corrs: dict[str, list], errors: dict[str, list]) -> dict:
    """{"shapes": {shape: mean corr or None}, "shape_videos": {shape: how many videos}, "regions_mm": {...}} of the
    videos `score_video` scored."""
    from serep_engine.eval.protocol import summarise

    return {"shapes": {s: round(float(np.mean(corrs[s])), 4) if corrs.get(s) else None for s in SHAPES},
            "shape_videos": {s: len(corrs.get(s, ())) for s in SHAPES},
            "regions_mm": summarise({r: np.concatenate(v) for r, v in errors.items()})}
