"""Live Link Face / ARKit takes read from the real iPhone recordings in ../shared/data/real/arkit_takes and from
files the exporter writes: every row accounted for, both spellings of the count column, lost-tracking rows,
fractional frame fields at the timecode's own rate, and a round trip through `serep export`. Then imported
(`serep import-takes`, `Engine.import_take`) onto the template and onto a mesh: the take's own ARKit values, its lost
rows, its head angles, and SEREP codes that are E_exp of the take's ARKit blend."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the expression model's encoder needs torch (none for Python 3.13)")

from serep_engine.cli import main
from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.contract.result import CaptureResult
from serep_engine.contract.takes import TakeError, read_take
from serep_engine.paths import data_dir
from serep_engine.retarget.export import head_angles, write_livelink_csv

TAKES = data_dir() / "real" / "arkit_takes"


def needs_takes():
    if not TAKES.is_dir():
        pytest.skip(f"real ARKit takes not found at {TAKES}")


@pytest.mark.parametrize("name, rows, lost", [("alex_rom_3.csv", 4030, 0), ("apfel.csv", 1926, 35)])
def test_real_takes_keep_every_row(name, rows, lost):
    needs_takes()
    take = read_take(TAKES / name)
    lines = (TAKES / name).read_text().splitlines()[1:]
    assert take.n_frames == rows == len(lines) and int((~take.found).sum()) == lost
    assert np.isnan(take.weights[~take.found]).all() and np.isfinite(take.weights[take.found]).all()
    # rows come 30 a second while the timecode counts 60 frames a second (its frame field steps by 2); each
    # row's time is its own timecode's: one row period apart, two where the phone skipped a sample
    assert take.timecode_rate == 60.0 and take.fps == 30.0
    periods = np.diff(take.times) * 30
    assert set(np.round(periods).astype(int)) <= {1, 2} and np.abs(periods - np.round(periods)).max() < 0.01
    first = lines[0].split(",")
    assert take.timecode_start == first[0]
    np.testing.assert_allclose(take.weights[0, ARKIT_NAMES.index("eyeBlinkLeft")], float(first[2]), atol=1e-7)


@pytest.mark.parametrize("name", ["alex_rom_3.csv", "alex_rom_4.csv", "apfel.csv", "facial.csv"])
def test_every_row_of_a_real_take_gets_its_own_frame(name):
    """The phone's clock drifts against 30 fps (alex_rom_3's rows slide half a frame in two minutes, so plain
    rounding puts two rows on one frame): frames rise strictly and stay within one frame of the row's time."""
    needs_takes()
    take = read_take(TAKES / name)
    frames = take.frames()
    assert len(frames) == take.n_frames and np.all(np.diff(frames) >= 1)
    assert np.abs(frames - take.times * take.fps).max() <= 1.5


def test_the_newer_header_spelling_and_lost_rows(tmp_path):
    needs_takes()
    text = (TAKES / "facial.csv").read_text().replace("BlendShapeCount", "BlendshapeCount", 1)
    lines = text.splitlines()
    lines[5] = lines[5].split(",")[0] + ",0"  # tracking lost on one row
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    take = read_take(tmp_path / "new.csv")
    assert take.n_frames == len(lines) - 1 and not take.found[4] and take.found[[3, 5]].all()


def test_a_take_written_by_the_exporter_reads_back_exactly(tmp_path):
    rng = np.random.default_rng(3)
    weights = rng.uniform(0, 1, (90, len(ARKIT_NAMES))).astype(np.float32)
    head = np.zeros((90, 6), np.float32)
    head[:, 1] = np.linspace(-0.3, 0.3, 90)  # a turn of the head (rotation vector about y)
    write_livelink_csv(tmp_path / "take.csv", np.arange(90), 30.0, ARKIT_NAMES, weights, head)
    take = read_take(tmp_path / "take.csv")
    assert take.n_frames == 90 and take.found.all() and take.fps == 30.0
    np.testing.assert_allclose(take.weights, weights, atol=1e-6)
    assert take.frames().tolist() == list(range(90))
    np.testing.assert_allclose(take.rotations[:, 0], np.linspace(-0.3, 0.3, 90), atol=1e-5)  # yaw


@pytest.mark.parametrize("text, message", [
    ("", "no rows"),
    ("Timecode,Foo\n00:00:00:00.000,1\n", "not a Live Link Face take"),
    ("Timecode,BlendShapeCount,EyeBlinkLeft\n00:00:00:00.000,1,0.5\n", "lacks the ARKit columns"),
])
def test_files_that_are_not_takes_are_refused(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(TakeError, match=message):
        read_take(tmp_path / "bad.csv")


@pytest.mark.parametrize("fps", [23.976, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0])
def test_a_take_keeps_its_rate_through_the_exporter(tmp_path, fps):
    """Timecodes are clock time, so 29.97 reads back as 29.97 (not as the 30 its timecode counts) and frame 1000
    of the take is still frame 1000."""
    frames = np.arange(1200)
    write_livelink_csv(tmp_path / "take.csv", frames, fps, ARKIT_NAMES, np.zeros((1200, 52)))
    take = read_take(tmp_path / "take.csv")
    assert take.fps == pytest.approx(fps, rel=2e-5) and take.frames().tolist() == frames.tolist()


# -- importing takes: the engine through `serep import-takes` ---------------------------------------------------
def import_takes(capsys, *argv) -> list[dict]:
    assert main(["import-takes", *map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["takes"]


@pytest.fixture(scope="module")
def apfel(face_model, tmp_path_factory):
    """The real take imported onto the template (one take: OUT is the result file)."""
    needs_takes()
    out = tmp_path_factory.mktemp("imported") / "apfel.npz"
    assert main(["import-takes", str(TAKES / "apfel.csv"), "--out", str(out), "--smoothing", "0"]) == 0
    return read_take(TAKES / "apfel.csv"), CaptureResult.load(out)


def mouth_motion(result: CaptureResult, row: int, mouth: np.ndarray) -> float:
    return float(np.linalg.norm(result.displacements(row)[mouth], axis=1).mean())


@pytest.mark.slow
def test_a_real_take_imports_onto_the_template(face_model, apfel):
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.regions import region_masks

    take, result = apfel
    assert result.n_frames == take.n_frames == 1926 and result.fps == 30.0
    assert result.frames.tolist() == take.frames().tolist()
    assert result.face_found.tolist() == take.found.tolist() and int((~result.face_found).sum()) == 35
    found = take.found
    assert list(result.arkit_names) == list(ARKIT_NAMES)
    # the take's own values (the few the phone wrote above ARKit's 1 are clipped), nothing solved or smoothed
    np.testing.assert_allclose(result.arkit_weights[found], np.clip(take.weights[found], 0, 1), atol=1e-6)
    lost = np.flatnonzero(~found)[0]  # held (the default gaps option): the row before the loss
    np.testing.assert_array_equal(result.arkit_weights[lost], result.arkit_weights[lost - 1])
    np.testing.assert_array_equal(result.codes_raw[lost], result.codes_raw[lost - 1])
    np.testing.assert_allclose(head_angles(result.head_pose)[found], take.rotations[found, :3], atol=1e-5)
    assert np.abs(result.head_pose[:, 3:]).max() == 0.0

    # the raw code of a row is E_exp of ICT's shapes blended by the row's weights, on the template
    jaw = int(np.nanargmax(take.weights[:, ARKIT_NAMES.index("jawOpen")]))
    ict = np.zeros(len(face_model.expression_names), np.float32)
    for index, name in enumerate(face_model.expression_names):
        arkit = {"browInnerUp_L": "browInnerUp", "browInnerUp_R": "browInnerUp", "cheekPuff_L": "cheekPuff",
                 "cheekPuff_R": "cheekPuff"}.get(name, name.replace("_L", "Left").replace("_R", "Right"))
        ict[index] = result.arkit_weights[jaw, ARKIT_NAMES.index(arkit)]
    mesh = face_model.face_neutral + np.tensordot(ict, face_model.face_expression_basis, axes=1)
    model = ExpressionModel.from_pretrained("cpu", face_model).double()  # the engine encodes in float64 too
    with torch.no_grad():
        code = model.encode(torch.from_numpy(mesh[None]).double(), face_model.face_neutral)[0].numpy()
    np.testing.assert_allclose(result.codes_raw[jaw], code, atol=1e-4 * np.abs(code).max())

    mouth = region_masks(face_model)["mouth"]
    neutral = int(np.argmin(np.where(take.found, np.nansum(take.weights, axis=1), np.inf)))  # a found row's
    assert take.weights[jaw, ARKIT_NAMES.index("jawOpen")] > 0.3
    assert mouth_motion(result, jaw, mouth) > 3 * mouth_motion(result, neutral, mouth)


@pytest.mark.slow
def test_takes_import_onto_a_mesh_and_into_a_folder(face_model, apfel, tmp_path, capsys):
    """A mesh of the template's topology in metres, moved (fitted vertex for vertex), and two takes at once."""
    from serep_engine.facemodel.regions import region_masks

    take, on_template = apfel
    np.savez(tmp_path / "head.npz", vertices=face_model.face_neutral * 0.01 + [0.1, 1.6, 0.0],
             faces=face_model.face_triangles)
    (summary,) = import_takes(capsys, TAKES / "apfel.csv", "--out", tmp_path / "on_head.npz",
                              "--target", tmp_path / "head.npz", "--smoothing", "0")
    assert summary["frames"] == 1926 and summary["lost"] == 35 and summary["vertices"] == len(face_model.face_neutral)
    result = CaptureResult.load(tmp_path / "on_head.npz")
    np.testing.assert_array_equal(result.arkit_weights, on_template.arkit_weights)  # a take's, on any mesh
    jaw = int(np.nanargmax(take.weights[:, ARKIT_NAMES.index("jawOpen")]))
    neutral = int(np.argmin(np.where(take.found, np.nansum(take.weights, axis=1), np.inf)))  # a found row's
    mouth = region_masks(face_model)["mouth"]
    assert mouth_motion(result, jaw, mouth) > 3 * mouth_motion(result, neutral, mouth)
    # metres: a hundredth of the template's centimetres
    assert mouth_motion(result, jaw, mouth) == pytest.approx(0.01 * mouth_motion(on_template, jaw, mouth), rel=0.1)

    summaries = import_takes(capsys, TAKES / "apfel.csv", TAKES / "facial.csv", "--out", tmp_path / "results")
    assert [s["result"] for s in summaries] == [str(tmp_path / "results" / f"{n}.npz") for n in ("apfel", "facial")]
    assert CaptureResult.load(tmp_path / "results" / "facial.npz").n_frames == read_take(TAKES / "facial.csv").n_frames
    assert main(["import-takes", str(TAKES / "apfel.csv"), str(TAKES / "facial.csv"), "--out",
                 str(tmp_path / "both.npz")]) == 1
    assert "need a folder" in capsys.readouterr().err
    write_livelink_csv(tmp_path / "twice.csv", [0, 1, 1, 2], 30.0, ARKIT_NAMES, np.zeros((4, 52)))  # a row twice
    assert main(["import-takes", str(tmp_path / "twice.csv"), "--out", str(tmp_path / "twice.npz")]) == 1
    assert "rows 2 and 3 of the take have one timecode" in capsys.readouterr().err


@pytest.mark.slow
def test_export_then_import_gives_back_the_same_curves(apfel, tmp_path, capsys):
    """A result's ARKit weights through `serep export --livelink` and back through `serep import-takes`."""
    _, result = apfel
    result.save(tmp_path / "take.npz")
    assert main(["export", str(tmp_path / "take.npz"), "--livelink", str(tmp_path / "take.csv")]) == 0
    capsys.readouterr()
    import_takes(capsys, tmp_path / "take.csv", "--out", tmp_path / "again.npz", "--smoothing", "0")
    again = CaptureResult.load(tmp_path / "again.npz")
    assert again.frames.tolist() == result.frames.tolist() and again.fps == result.fps and again.face_found.all()
    np.testing.assert_allclose(again.arkit_weights, result.arkit_weights, atol=1e-6)
    np.testing.assert_allclose(head_angles(again.head_pose), head_angles(result.head_pose), atol=1e-6)
