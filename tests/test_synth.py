import json
import subprocess
import sys

import numpy as np
import pytest

from serep_engine.eval.protocol import kabsch_align, region_errors_mm
from serep_engine.track.crop import CANONICAL_POINTS, similarity_to_crop, transform_points


@pytest.fixture(scope="module")
def renderer(face_model):
    from serep_engine.render.head import HeadRenderer

    return HeadRenderer(face_model, 320)


def test_render_is_deterministic_and_covers_the_head(face_model, renderer):
    from serep_engine.render.head import Appearance, Camera

    camera = Camera(320, focal=800, distance=80)
    first, mask = renderer.render(face_model.neutral, camera, Appearance())
    second, _ = renderer.render(face_model.neutral, camera, Appearance())
    np.testing.assert_array_equal(first, second)
    assert 0.1 < mask.mean() < 0.9


def test_projected_landmarks_land_on_the_rendered_features(face_model, renderer):
    """mediapipe, run on the renders, finds the eye corners, nose tip and mouth corners where the projected
    ICT landmarks say they are."""
    from serep_engine.render.head import Appearance, Camera
    from serep_engine.track.tracking import FaceTracker

    # (mediapipe index, ICT 68-point index): eye outer corners, nose tip, mouth corners
    pairs = [(33, 36), (263, 45), (1, 30), (61, 48), (291, 54)]
    with FaceTracker(video=False, max_faces=1) as tracker:
        for yaw in (0, 30):
            camera = Camera(320, focal=800, distance=80, yaw=yaw)
            mesh = face_model.neutral + 0.5 * face_model.expression_basis[45]  # a half smile
            image, mask = renderer.render(mesh, camera, Appearance())
            observation = tracker.track(np.where(mask[..., None], image, 128).astype(np.uint8))
            assert observation.found
            projected, _ = camera.project(mesh[face_model.landmarks68])
            inter_ocular = np.linalg.norm(projected[36] - projected[45])
            found = observation.landmarks[[p[0] for p in pairs], :2]
            error = np.linalg.norm(found - projected[[p[1] for p in pairs]], axis=1)
            assert error.mean() < 0.1 * inter_ocular, (yaw, error)


def test_face_paint_draws_brows_lips_and_a_lash_line_that_move_with_the_face(face_model, renderer):
    """The painted render (the default) against the unpainted one of the same head: they differ only on the face
    (brows, lips, the lashes' roots), the brows are dark where the template's brow landmarks project and the forehead
    above them is not, the lips are redder than the cheek, and on a raised brow (browInnerUp) the brows move up with
    the skin."""
    from serep_engine.facemodel.expressions import INDEX
    from serep_engine.render.head import Appearance, Camera, HeadRenderer

    camera = Camera(320, focal=800, distance=60)
    painted, _ = renderer.render(face_model.neutral, camera, Appearance())
    plain, _ = HeadRenderer(face_model, 320, painted=False).render(face_model.neutral, camera, Appearance())
    changed = np.abs(painted.astype(int) - plain).max(2) > 8
    face_box = camera.project(face_model.neutral[face_model.landmarks68])[0]
    (left, top), (right, bottom) = face_box.min(0) - 10, face_box.max(0) + 10
    rows, cols = np.nonzero(changed)
    assert changed.any() and (left < cols).all() and (cols < right).all() and (top - 20 < rows).all()
    assert (rows < bottom).all()

    def colour_at(image, points):
        pixels = camera.project(points)[0].round().astype(int)
        return image[pixels[:, 1], pixels[:, 0]].astype(float)

    landmark = face_model.neutral[face_model.landmarks68]
    below, above = [0.0, -0.3, 0.0], [0.0, 1.0, 0.0]  # cm from the brow landmarks: inside the brow, the forehead
    brows = landmark[[19, 20, 23, 24]]
    assert colour_at(painted, brows + below).mean() < 0.6 * colour_at(plain, brows + below).mean()
    assert colour_at(painted, brows + above).mean() > 0.9 * colour_at(plain, brows + above).mean()
    lips = colour_at(painted, (landmark[[51, 57]] + landmark[[62, 66]]) / 2)  # the middle of each lip
    cheek = colour_at(painted, landmark[[2, 14]] * [0.8, 1.0, 1.0] + [0.0, 0.0, 0.5])
    assert (lips[:, 0] / lips[:, 1]).mean() > 1.15 * (cheek[:, 0] / cheek[:, 1]).mean()
    raised = face_model.neutral + face_model.expression_basis[INDEX["browInnerUp_L"]] \
        + face_model.expression_basis[INDEX["browInnerUp_R"]]
    up, _ = renderer.render(raised, camera, Appearance())
    inner = [20, 23]
    assert colour_at(up, raised[face_model.landmarks68[inner]] + below).mean() \
        < 0.75 * colour_at(plain, landmark[inner] + below).mean()


def test_crop_similarity_is_exact_on_a_similar_copy():
    points = CANONICAL_POINTS * 200
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points @ rotation.T * 1.3 + [17, -5]
    np.testing.assert_allclose(transform_points(moved, similarity_to_crop(moved, 200)), points, atol=1e-9)


def test_protocol_alignment_is_exact_on_a_rigidly_moved_copy(face_model):
    truth = face_model.face_neutral[None] + 0.3 * face_model.face_expression_basis[[26, 45]]
    angle = np.radians(25)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    moved = truth @ rotation.T + [3.0, -1.0, 2.0]
    errors = region_errors_mm(face_model, moved, truth)
    assert all(e.max() < 1e-4 for e in errors.values())
    np.testing.assert_allclose(kabsch_align(moved, truth), truth, atol=1e-4)


@pytest.mark.slow
def test_synthetic_samples_are_seeded_and_complete(face_model, tmp_path):
    from serep_engine.synth.shards import read_shard, write_synthetic_set

    summary = write_synthetic_set(6, tmp_path / "a", seed=3, shard_size=3, workers=1, log=lambda _: None)
    assert summary["n"] == 6 and summary["shards"] == 2
    # the same set made in two runs (3 samples, then extended to 6) is the same set
    write_synthetic_set(3, tmp_path / "b", seed=3, shard_size=3, workers=1, log=lambda _: None)
    extended = write_synthetic_set(6, tmp_path / "b", seed=3, shard_size=3, workers=1, log=lambda _: None)
    assert extended["n"] == 3 and extended["shards"] == 1
    for shard in ("shard_00000.npz", "shard_00001.npz"):
        np.testing.assert_array_equal(read_shard(tmp_path / "a" / shard)["crops"],
                                      read_shard(tmp_path / "b" / shard)["crops"])
    with pytest.raises(ValueError, match="seed 3"):
        write_synthetic_set(9, tmp_path / "b", seed=4, shard_size=3, workers=1, log=lambda _: None)
    first = read_shard(tmp_path / "a" / "shard_00000.npz")
    assert first["crops"].shape == (3, 256, 256, 3)
    assert first["code"].shape == (3, 64) and first["weights"].shape == (3, 53)
    assert first["landmarks"].shape == (3, 68, 2) and first["visible"].dtype == bool
    assert first["pose"].shape == (3, 3)
    # the landmarks sit inside the crop, where the cropping put the face
    assert ((first["landmarks"] > -20) & (first["landmarks"] < 276)).mean() > 0.95


def test_synthetic_samples_take_their_expressions_from_real_takes(face_model, tmp_path):
    from serep_engine.paths import data_dir
    from serep_engine.synth.dataset import SynthConfig
    from serep_engine.synth.shards import read_shard, take_expressions, write_synthetic_set

    take = data_dir() / "real" / "arkit_takes" / "apfel.csv"
    frames = take_expressions(face_model, (str(take),))
    assert frames.shape == (1926 - 35, 53)  # every tracked row; the 35 rows without values are left out
    config = SynthConfig(takes=(str(take),), take_share=1.0)
    write_synthetic_set(2, tmp_path, seed=5, shard_size=2, workers=1, config=config, log=lambda _: None)
    weights = read_shard(tmp_path / "shard_00000.npz")["weights"]
    nearest = np.abs(weights[:, None] - frames[None]).max(2).min(1)
    assert np.all(nearest < 1e-6)  # each sample's expression is one of the take's frames


@pytest.mark.slow
def test_eval_capture_contract_on_a_small_subset(repo_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "serep_engine", "eval", "capture", "--method", "neutral", "--method",
         "landmark_fit", "--json", "--subjects", "1", "--frames", "40", "--figure", str(tmp_path / "bars.png")],
        capture_output=True, text=True, cwd=repo_root, check=True,
    )
    assert (tmp_path / "bars.png").stat().st_size > 10_000
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["method"] == "landmark_fit"
    assert set(result["regions_mm"]) == {"forehead", "nose", "cheek", "mouth", "mean"}
    assert set(result["views_mm"]) == {"frontal", "angled", "profile"}
    assert result["n_frames"] == 5 * 40
    logged = [json.loads(line) for line in out.stderr.splitlines() if line.startswith('{"method"')]
    neutral = next(r for r in logged if r["method"] == "neutral")
    assert result["regions_mm"]["mouth"] < neutral["regions_mm"]["mouth"]  # fitting beats doing nothing


@pytest.mark.slow
def test_eval_capture_of_serep_with_and_without_mirror_averaging(repo_root):
    def run(*extra):
        out = subprocess.run([sys.executable, "-m", "serep_engine", "eval", "capture", "--method", "serep", "--json",
                              "--subjects", "1", "--frames", "12", *extra],
                             capture_output=True, text=True, cwd=repo_root, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    mirrored, plain = run(), run("--no-mirror")
    assert mirrored["n_frames"] == plain["n_frames"] == 5 * 12
    assert all(0 < value < 10 for value in mirrored["regions_mm"].values())
    assert mirrored["regions_mm"] != plain["regions_mm"]  # the shipped model mirrors unless told not to


def test_each_renderer_draws_in_its_own_context(face_model):
    """A renderer made after another (the preview makes a head and a user's mesh renderer) must not take the first
    one's draws: before, the first renderer's calls went to the context made last."""
    from serep_engine.render.head import Appearance, Camera, HeadRenderer

    camera = Camera(320, focal=800, distance=60)
    painted = HeadRenderer(face_model, 320)
    first, _ = painted.render(face_model.neutral, camera, Appearance())
    plain, _ = HeadRenderer(face_model, 320, painted=False).render(face_model.neutral, camera, Appearance())
    again, _ = painted.render(face_model.neutral, camera, Appearance())
    np.testing.assert_array_equal(again, first)
    assert np.abs(plain.astype(int) - first).max() > 50
