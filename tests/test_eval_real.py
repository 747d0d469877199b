"""`serep eval real`, the photos part: the measures on a hand-made case with a known answer (a decoded mesh with
a known lip gap, measured on the template and as an image would show it), the comparison, and the whole part on
a few real annotated photos."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the evaluation's models needs torch (none for Python 3.13)")

from serep_engine.eval.real import MEASURES, compare, evaluate_photos, expression_measures, image_up

AFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "faces68" / "afw"


def test_measures_read_the_same_in_the_template_and_in_an_image(face_model):
    """jawOpen at 0.6 on the template: the lip gap it makes (known from the vertices), read from the frontal
    template points and from the same points as a photo would hold them (pixels, y down, turned in the image
    plane, any scale) alike."""
    names = list(face_model.expression_names)
    mesh = face_model.face_neutral + 0.6 * face_model.face_expression_basis[names.index("jawOpen")]
    points = mesh[face_model.landmarks68, :2].astype(np.float64)
    on_template = expression_measures(points, np.array([0.0, 1.0]))
    known = np.mean([np.linalg.norm(points[a] - points[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    assert on_template["lip_gap"] == pytest.approx(known / np.linalg.norm(points[45] - points[36]))
    assert on_template["lip_gap"] > 0.2 and on_template["brow_height"] > 0
    angle = np.radians(12.0)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pixels = (points * [1.0, -1.0]) @ turn.T * 37.0 + [400.0, 300.0]  # y down, turned, scaled, moved
    in_image = expression_measures(pixels, image_up(pixels))
    for name in MEASURES:
        assert in_image[name] == pytest.approx(on_template[name], abs=1e-9), name
    closed = expression_measures(face_model.face_neutral[face_model.landmarks68, :2], np.array([0.0, 1.0]))
    assert closed["lip_gap"] < 0.2 * on_template["lip_gap"]


def test_compare_gives_correlation_and_spread():
    truth = [dict.fromkeys(MEASURES, float(v)) for v in (1, 2, 3, 4)]
    half = [dict.fromkeys(MEASURES, 0.5 * v + 7) for v in (1, 2, 3, 4)]
    result = compare(half, truth)
    assert result["lip_gap"] == {"corr": 1.0, "spread": 0.5}
    flat = compare([dict.fromkeys(MEASURES, 0.0)] * 4, truth)
    assert flat["eye_left"] == {"corr": None, "spread": 0.0}  # the neutral method does not vary


@pytest.mark.slow
def test_the_photos_part_on_a_few_real_photos(face_model, tmp_path):
    if not AFW.is_dir():
        pytest.skip(f"annotated photos not found at {AFW}")
    points = json.loads((AFW / "landmarks68.json").read_text())["points"]
    chosen = sorted(points)[:6]
    for name in chosen:
        (tmp_path / name).symlink_to(AFW / name)
    (tmp_path / "landmarks68.json").write_text(json.dumps({"points": {n: points[n] for n in chosen}}))
    result = evaluate_photos(face_model, ["neutral", "mediapipe_blendshapes"], tmp_path)
    n = result["neutral"]["n"]
    assert 2 <= n <= 6 and result["mediapipe_blendshapes"]["n"] == n  # profiles beyond 35 degrees are left out
    assert result["neutral"]["lip_gap"]["spread"] == 0.0
    assert set(result["mediapipe_blendshapes"]) == {"n", *MEASURES}
    assert result["mediapipe_blendshapes"]["lip_gap"]["spread"] > 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "landmarks68.json").write_text(json.dumps({"points": {}}))
    assert evaluate_photos(face_model, ["neutral"], empty) == {"neutral": {"n": 0}}


def test_points_are_put_in_the_face_frame_before_measuring():
    """A turned, scaled, moved copy of a face's 478 points aligns back onto it, so a turning head reads the same
    eye openings as a still one."""
    from scipy.spatial.transform import Rotation

    from serep_engine.eval.real import _align, mediapipe_measures

    rng = np.random.default_rng(0)
    face = rng.normal(size=(478, 3)) * [60.0, 80.0, 30.0]
    turned = 1.7 * face @ Rotation.from_euler("xyz", [10, 35, -5], degrees=True).as_matrix().T + [5.0, -3.0, 9.0]
    np.testing.assert_allclose(_align(turned, face), face, atol=1e-9)
    assert mediapipe_measures(_align(turned, face)) == pytest.approx(mediapipe_measures(face))


@pytest.mark.slow
def test_the_clips_part_sees_the_winks_of_a_real_clip(face_model, tmp_path):
    """liveportrait_d3 winks one eye from frame 8: mediapipe's own scores, carried through ICT's shapes, wink on
    the right side; the neutral method never does."""
    from serep_engine.eval.real import evaluate_clips

    clip = AFW.parents[1] / "videos" / "liveportrait_d3.mp4"
    if not clip.exists():
        pytest.skip(f"real clips not found at {clip.parent}")
    (tmp_path / clip.name).symlink_to(clip)
    (tmp_path / "notes.txt").write_text("not a clip")
    result = evaluate_clips(face_model, ["neutral", "mediapipe_blendshapes"], tmp_path, frames=40)
    assert result["neutral"]["n"] == result["mediapipe_blendshapes"]["n"] == 1
    winks = result["mediapipe_blendshapes"]["winks"]
    assert winks["frames"] >= 10 and winks["same_side"] >= 0.9 and winks["magnitude"] > 0.5
    assert result["neutral"]["winks"]["same_side"] == 0.0 and result["neutral"]["lip_gap"]["slope"] == 0.0
    assert result["mediapipe_blendshapes"]["lip_gap"]["corr"] > 0.5
    assert evaluate_clips(face_model, ["neutral"], tmp_path / "none")["neutral"]["n"] == 0
