"""`serep eval real`, the takes part (eval/takes.py): the busiest window, ARKit weights onto ICT's shapes, and the
whole part on a short real take beside a file that is not one."""

from pathlib import Path

import numpy as np
import pytest

from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.eval.takes import MOVES, SHAPES, busiest_window, evaluate_takes, score_video, summary
from serep_engine.facemodel.expressions import ict_weights

TAKES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "arkit_takes"


def test_the_busiest_window_is_where_the_listed_shapes_move_and_the_face_is_tracked():
    weights = np.zeros((600, 52), np.float32)
    jaw = ARKIT_NAMES.index("jawOpen")
    weights[300:450, jaw] = np.sin(np.linspace(0, 12, 150)) ** 2  # speech in the middle
    weights[50:200, ARKIT_NAMES.index("tongueOut")] = 1.0  # not a listed shape
    found = np.ones(600, bool)
    assert busiest_window(weights, found, 150) == 300
    found[320] = False  # tracking lost inside: a fully tracked window near it wins
    weights[320] = np.nan
    start = busiest_window(weights, found, 150)
    assert not (start <= 320 < start + 150) and abs(start - 300) < 150


def test_arkit_weights_drive_their_ict_shapes_and_both_halves_of_a_split_one(face_model):
    names = list(face_model.expression_names)
    arkit = np.zeros((1, 52), np.float32)
    arkit[0, ARKIT_NAMES.index("jawOpen")] = 0.7
    arkit[0, ARKIT_NAMES.index("eyeBlinkLeft")] = 0.4
    arkit[0, ARKIT_NAMES.index("browInnerUp")] = 0.5  # one ARKit shape, two ICT halves
    arkit[0, ARKIT_NAMES.index("tongueOut")] = 1.0  # ICT has no tongue shape
    weights = ict_weights(face_model, arkit)
    assert weights.shape == (1, len(names))
    assert weights[0, names.index("jawOpen")] == pytest.approx(0.7)
    assert weights[0, names.index("eyeBlink_L")] == pytest.approx(0.4)
    assert weights[0, names.index("eyeBlink_R")] == 0.0
    assert weights[0, names.index("browInnerUp_L")] == weights[0, names.index("browInnerUp_R")] == pytest.approx(0.5)
    assert weights.sum() == pytest.approx(2.1)  # nothing else moves


def test_a_shape_is_scored_only_in_videos_whose_take_moves_it(face_model):
    """A take whose jaw speaks and whose mouthLeft only jitters (std 0.01, as the real takes' resting keys do): the
    jaw is scored, mouthLeft is not (None, no video), and a method that misses the jaw scores 0 on it."""
    rng = np.random.default_rng(0)
    arkit = np.zeros((90, 52), np.float32)
    jaw, left = ARKIT_NAMES.index("jawOpen"), ARKIT_NAMES.index("mouthLeft")
    arkit[:, jaw] = 0.4 + 0.4 * np.sin(np.linspace(0, 9, 90))
    arkit[:, left] = 0.02 + 0.01 * rng.standard_normal(90)
    assert arkit[:, jaw].std() >= MOVES > arkit[:, left].std()
    meshes = np.repeat(face_model.face_neutral[None], 90, axis=0)
    corrs, errors = {}, {}
    score_video(face_model, meshes, arkit, meshes, arkit, corrs, errors)  # a perfect reading
    score_video(face_model, meshes, np.zeros_like(arkit), meshes, arkit, corrs, errors)  # one that reads nothing
    result = summary(corrs, errors)
    assert result["shapes"]["jawOpen"] == pytest.approx(0.5) and result["shape_videos"]["jawOpen"] == 2
    assert result["shapes"]["mouthLeft"] is None and result["shape_videos"]["mouthLeft"] == 0


@pytest.mark.slow
def test_the_takes_part_on_a_short_real_take(face_model, tmp_path):
    """160 rows of a real take where it moves (rendered from five views, cached) and a CSV that is not a take: one take
    is scored, the other skipped; the neutral method moves no shape (correlation 0 for every shape the take moves)
    and misses the take's expressions by millimetres."""
    if not TAKES.is_dir():
        pytest.skip("the real ARKit takes are not in ../shared/data")
    lines = (TAKES / "facial.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(lines[:1] + lines[401:561]) + "\n")  # its first rows rest
    (tmp_path / "notes.csv").write_text("not,a,take\n1,2,3\n")
    result = evaluate_takes(face_model, ["neutral"], tmp_path)["neutral"]
    assert result["n"] == 1
    assert set(result["shapes"]) == set(SHAPES)
    assert all(value in (0.0, None) for value in result["shapes"].values())
    assert any(value == 0.0 for value in result["shapes"].values())
    assert result["regions_mm"]["mean"] > 0.1
    assert evaluate_takes(face_model, ["neutral"], tmp_path / "missing") == {"neutral": {"n": 0}}


def test_the_command_reports_every_part_and_an_empty_folder_as_none(face_model, tmp_path, capsys):
    """`serep eval real --json` on folders with nothing usable in them: the contract's last line, each part with
    "n": 0 for each method (the figure is written too)."""
    import json

    from serep_engine.cli import main

    for name in ("photos", "clips", "takes"):
        (tmp_path / name).mkdir()
    (tmp_path / "takes" / "notes.csv").write_text("not,a,take\n")
    argv = ["eval", "real", "--method", "neutral", "--method", "mediapipe_blendshapes", "--json",
            "--figure", str(tmp_path / "real.png")] + [f"--{n}={tmp_path / n}" for n in ("photos", "clips", "takes")]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["methods"]) == {"neutral", "mediapipe_blendshapes"}
    for method in result["methods"].values():
        assert {part: method[part]["n"] for part in ("photos", "clips", "takes")} == {"photos": 0, "clips": 0,
                                                                                        "takes": 0}
    assert (tmp_path / "real.png").stat().st_size > 0
