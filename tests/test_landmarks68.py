"""The 68-landmark map on mediapipe's points (capture/landmarks68.py): its algebra, its fit, and its reading of
real annotated photos it was not fitted on."""

import json

import numpy as np
import pytest

from serep_engine.capture.landmarks68 import LandmarkMap, fit_landmark_map, fit_map
from serep_engine.capture.metrics import nme_inner51
from serep_engine.paths import data_dir
from serep_engine.track.correspondence import mediapipe_by_distance_to_68

FACES68 = data_dir() / "real" / "faces68"


@pytest.fixture(scope="module")
def order(face_model):
    return mediapipe_by_distance_to_68(face_model)


def test_the_shipped_map_commutes_with_any_similarity_of_the_image():
    landmark_map = LandmarkMap.from_pretrained()
    np.testing.assert_allclose(landmark_map.weights.sum(1), 1.0, atol=1e-6)
    points = np.random.default_rng(0).uniform(0, 500, (478, 3))
    angle, scale, shift = 0.4, 1.7, np.array([30.0, -12.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = points[:, :2] @ rotation.T + shift
    np.testing.assert_allclose(landmark_map(moved), landmark_map(points) @ rotation.T + shift, atol=1e-3)


def test_a_fit_recovers_a_known_affine_combination(order):
    """Truth made by known weights (summing to one) of each point's nearest candidates: the fit finds them."""
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 256, (300, 478, 2))
    known = rng.uniform(0.0, 1.0, (68, 8))
    known /= known.sum(1, keepdims=True)
    truth = np.einsum("nlkc,lk->nlc", points[:, order[:, :8]], known)
    fitted = fit_map(points, truth, order, neighbours=8, ridge=1e-6)
    np.testing.assert_allclose(fitted.weights, known, atol=1e-5)
    np.testing.assert_array_equal(fitted.neighbours, order[:, :8])


def test_cross_validation_picks_a_setting_and_says_its_score(face_model, order):
    rng = np.random.default_rng(2)
    points = rng.uniform(0, 256, (60, 478, 2))
    truth = points[:, order[:, 0]] + rng.normal(0, 0.5, (60, 68, 2))  # the nearest point, plus noise
    landmark_map, summary = fit_landmark_map(face_model, points, truth)
    assert len(summary["cv"]) == 9 and summary["photos"] == 60
    assert summary["cv_nme_inner51"] == min(row["nme"] for row in summary["cv"])
    assert nme_inner51(landmark_map(points), truth).mean() < 0.01


def test_on_afw_the_map_beats_the_nearest_template_points(face_model, order, tmp_path):
    """AFW is never fitted on. On its first 40 photos the shipped map (fitted on HELEN-train) is closer to the
    annotation than mediapipe's points nearest to each landmark on the template."""
    from serep_engine.capture.landmarks68 import photo_points

    afw = FACES68 / "afw"
    if not afw.exists():
        pytest.skip("faces68 photos not found")
    annotation = json.loads((afw / "landmarks68.json").read_text())
    names = sorted(annotation["points"])[:40]
    for name in names:
        (tmp_path / name).write_bytes((afw / name).read_bytes())
    (tmp_path / "landmarks68.json").write_text(json.dumps({"points": {n: annotation["points"][n] for n in names}}))
    points, truth = photo_points(tmp_path)
    assert len(points) >= 38
    mapped = nme_inner51(LandmarkMap.from_pretrained()(points), truth).mean()
    nearest = nme_inner51(points[:, order[:, 0]], truth).mean()
    assert mapped < 0.045 and mapped < 0.8 * nearest
