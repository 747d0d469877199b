"""Retargeting onto user meshes: fitting, transfer, ARKit names and solve, Live Link Face export.

Real things throughout: the ICT model, mediapipe on real renders of the meshes, deformation transfer."""

import csv
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("torch", reason="serep_engine.eval.retarget needs torch (none for Python 3.13)")

from serep_engine.eval.retarget import EYES_AND_TEETH, HEAD_POLYGONS, HEAD_VERTICES
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, quads_to_triangles
from serep_engine.facemodel.identities import eval_identity, identity_shapes
from serep_engine.retarget import LandmarkError, NoFaceFoundError, fit_target
from serep_engine.contract.arkit import ARKIT_NAMES, match_arkit_names
from serep_engine.retarget.arkit import ARKitSolver
from serep_engine.retarget.export import LIVELINK_HEADER, export_result, write_livelink_csv


@pytest.fixture(scope="module")
def rotated_head(face_model):
    """A held-out identity's head, neck and eyeballs (separate parts), in metres, turned and moved."""
    full = face_model.identity_neutral(eval_identity(face_model, 3), face_only=False).astype(np.float64)
    eyes = np.arange(*EYES_AND_TEETH[1])
    keep = np.concatenate([np.arange(HEAD_VERTICES), eyes])
    eye_polygons = face_model.polygons[np.isin(face_model.polygons, np.r_[eyes, -1]).all(1)]
    polygons = np.concatenate([face_model.polygons[:HEAD_POLYGONS], eye_polygons])
    index_of = np.full(len(full) + 1, -1)
    index_of[keep] = np.arange(len(keep))
    triangles = quads_to_triangles(np.where(polygons >= 0, index_of[polygons], -1))
    triangles = triangles[:, [0, 2, 1]]  # another winding: not the template's triangle list
    rotation = Rotation.from_euler("xyz", [80, -30, 20], degrees=True).as_matrix()
    user = 0.01 * full[keep] @ rotation.T + [0.5, 1.0, -2.0]
    registration = fit_target(face_model, user, triangles)
    return {"vertices": user, "triangles": triangles, "truth": full[keep], "rotation": rotation,
            "registration": registration, "eyes": np.arange(HEAD_VERTICES, len(keep))}


def test_template_topology_round_trips_exactly(face_model):
    vertices = face_model.face_neutral.astype(np.float64) * 2.0 + [1.0, 2.0, 3.0]  # other units, moved
    registration = fit_target(face_model, vertices, face_model.face_triangles, use_cache=False)
    np.testing.assert_allclose(registration.neutral, face_model.face_neutral, atol=1e-4)
    assert registration.scale_to_user == pytest.approx(2.0, rel=1e-6)
    shape = face_model.face_expression_basis[26]  # jawOpen
    np.testing.assert_allclose(registration.to_user(shape), 2.0 * shape, atol=1e-4)


def test_rotated_scaled_head_fits(face_model, rotated_head):
    registration, user = rotated_head["registration"], rotated_head["vertices"]
    assert registration.auto_landmarks
    assert registration.scale_to_user == pytest.approx(0.01, rel=0.03)
    # Template vertex i of the registration lies where that vertex is on the identity (mm).
    placed = registration.similarity.to_user(registration.neutral)
    error_mm = np.linalg.norm(placed - user[:FACE_VERTEX_COUNT], axis=1) * 1000.0
    assert np.mean(error_mm[:6706]) < 1.0, np.mean(error_mm[:6706])
    found = user[registration.landmarks68]
    truth = user[face_model.landmarks68]
    assert np.median(np.linalg.norm(found - truth, axis=1)) * 1000.0 < 3.0


def test_transfer_is_linear_and_leaves_far_vertices_still(face_model, rotated_head):
    registration, truth = rotated_head["registration"], rotated_head["truth"]
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((64, FACE_VERTEX_COUNT, 3)).astype(np.float32)
    moved = registration.to_user(basis)
    assert moved.shape == (64, len(truth), 3) and moved.dtype == np.float32
    np.testing.assert_allclose(registration.to_user(2.0 * basis[3] - basis[5]), 2.0 * moved[3] - moved[5], atol=1e-4)
    from scipy.spatial import cKDTree

    from serep_engine.retarget.fit import FALLOFF_CM

    far = cKDTree(truth[:FACE_VERTEX_COUNT]).query(truth)[0] > FALLOFF_CM[1] + 0.5  # cm from the face
    assert far.sum() > 500  # the back of the head and the neck
    assert np.abs(moved[:, far]).max() == 0.0
    assert np.abs(moved[:, rotated_head["eyes"]]).max() == 0.0  # eyeballs are a separate part: still


def test_eyelids_close_and_lips_follow_on_the_users_mesh(face_model, rotated_head):
    registration = rotated_head["registration"]
    shapes = identity_shapes(face_model, eval_identity(face_model, 3))
    names = list(face_model.expression_names)
    for name in ("eyeBlink_L", "jawOpen"):
        expected = shapes[names.index(name)] @ rotated_head["rotation"].T * 0.01  # truth on the user's vertices
        moved = registration.to_user(shapes[names.index(name)])[:FACE_VERTEX_COUNT]
        active = np.linalg.norm(expected, axis=1) > 0.3 * np.linalg.norm(expected, axis=1).max()
        error = np.linalg.norm(moved[active] - expected[active], axis=1).mean()
        assert error < 0.1 * np.linalg.norm(expected[active], axis=1).mean(), name


def test_no_face_is_a_clear_error(face_model):
    import trimesh

    blob = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    with pytest.raises(NoFaceFoundError, match="no face found"):
        fit_target(face_model, blob.vertices, blob.faces, use_cache=False)


def test_given_landmarks_are_checked(face_model, rotated_head):
    with pytest.raises(LandmarkError, match="68"):
        fit_target(face_model, rotated_head["vertices"], rotated_head["triangles"], landmarks=np.arange(10))
    few = np.full(68, -1)
    few[:3] = [1, 2, 3]
    with pytest.raises(LandmarkError, match="at least 6"):
        fit_target(face_model, rotated_head["vertices"], rotated_head["triangles"], landmarks=few)


def test_given_landmarks_override_detection(face_model, rotated_head):
    user, triangles = rotated_head["vertices"], rotated_head["triangles"]
    given = face_model.landmarks68.copy()  # the head keeps ICT's vertex numbering for its first vertices
    registration = fit_target(face_model, user, triangles, landmarks=given, use_cache=False)
    assert not registration.auto_landmarks
    placed = registration.similarity.to_user(registration.neutral)
    assert np.mean(np.linalg.norm(placed - user[:FACE_VERTEX_COUNT], axis=1)[:6706]) * 1000.0 < 1.0


def test_arkit_names_in_mixed_spellings():
    names = ["eyeBlinkLeft", "EyeBlink_R", "eyeBlink_L", "jaw_open", "Face.mouthSmileLeft", "mouthSmile.R",
             "BROWINNERUP", "browInnerUp_L", "cheekPuff", "TongueOut", "Basis", "Key 1", "eyeBlink", "smile"]
    found = match_arkit_names(names)
    assert found == {
        "eyeBlinkLeft": "eyeBlinkLeft", "EyeBlink_R": "eyeBlinkRight", "eyeBlink_L": "eyeBlinkLeft",
        "jaw_open": "jawOpen", "Face.mouthSmileLeft": "mouthSmileLeft", "mouthSmile.R": "mouthSmileRight",
        "BROWINNERUP": "browInnerUp", "browInnerUp_L": "browInnerUp", "cheekPuff": "cheekPuff",
        "TongueOut": "tongueOut",
    }
    assert len(ARKIT_NAMES) == 52 and len(set(ARKIT_NAMES)) == 52


def test_arkit_solve_recovers_known_weights(face_model):
    neutral = face_model.identity_neutral(eval_identity(face_model, 0))
    solver = ARKitSolver(face_model, neutral)
    assert solver.absent == ("tongueOut",)
    rng = np.random.default_rng(1)
    weights = rng.uniform(0, 1, (4, 52)).astype(np.float32) * (rng.random((4, 52)) < 0.3)
    weights[:, ~solver.present] = 0
    gaze = rng.uniform(0, 1, (4, 8)).astype(np.float32)  # the tracker's: reported as they are
    weights[:, solver.gaze] = 0  # and the face's displacements carry none of the gaze shapes' lid motion
    recovered = solver.solve(solver.blend(weights), gaze=gaze)
    weights[:, solver.gaze] = gaze
    assert recovered.shape == (4, 52) and recovered.min() >= 0 and recovered.max() <= 1
    np.testing.assert_allclose(recovered, weights, atol=0.02)
    # Out-of-range demands are clipped to the box, and tongueOut stays 0.
    clipped = solver.solve(solver.blend(np.clip(weights * 3.0, 0, 3)), gaze=gaze)
    assert clipped.max() <= 1.0 and clipped[:, ARKIT_NAMES.index("tongueOut")].max() == 0.0


def test_gaze_is_never_read_off_the_lids(face_model):
    """A blink with no gaze known solves as a blink: the eyeLook shapes, which also move the lids, stay at 0."""
    solver = ARKitSolver(face_model, face_model.face_neutral)
    weights = np.zeros((2, 52), np.float32)
    weights[0, ARKIT_NAMES.index("eyeBlinkLeft")] = 1.0
    weights[1, ARKIT_NAMES.index("eyeBlinkRight")] = 0.6
    weights[1, ARKIT_NAMES.index("eyeLookDownRight")] = 0.5  # the lid lowered by a downward look, gaze unknown
    recovered = solver.solve(solver.blend(weights))
    assert recovered[:, solver.gaze].max() == 0.0
    assert recovered[0, ARKIT_NAMES.index("eyeBlinkLeft")] > 0.97
    assert recovered[1, ARKIT_NAMES.index("eyeBlinkRight")] >= 0.6


def test_the_keys_the_network_reads_better_come_from_its_own_codes():
    """NETWORK_KEYS (and BROW_DOWN_KEYS, without the tracker's scores) are the network's keys as motion from the
    clip's rest (their low quantile), scaled by how much more the refinement moves the keys both read well (a real
    face: two to three times), within 1-4 and the keys' [0, 1]; the keys that are neither taken nor averaged are the
    refinement's."""
    from serep_engine.retarget.arkit import (AVERAGED_KEYS, BROW_DOWN_KEYS, NETWORK_KEYS, REST_QUANTILE, SHARED_KEYS,
                                             fused_keys)

    rng = np.random.default_rng(3)
    refined, network = rng.uniform(0, 0.5, (2, 40, 52)).astype(np.float32)
    network += 0.1  # the network's rest: a little of every key on every frame
    shared = [ARKIT_NAMES.index(name) for name in SHARED_KEYS]
    taken = [ARKIT_NAMES.index(name) for name in NETWORK_KEYS + BROW_DOWN_KEYS]
    rest = np.quantile(network, REST_QUANTILE, axis=0)
    refined[:, shared] = 2.5 * (network[:, shared] - rest[shared])  # the refinement sees 2.5 times the motion
    fused = fused_keys(refined, network)
    np.testing.assert_allclose(fused[:, taken], np.clip(2.5 * (network - rest)[:, taken], 0, 1), atol=1e-5)
    assert fused[:, taken].min() == 0.0 and fused[:, taken].max() == 1.0  # below the rest, and 2.5 x up to 0.5
    others = np.setdiff1d(np.arange(52), taken + [ARKIT_NAMES.index(name) for name in AVERAGED_KEYS])
    np.testing.assert_array_equal(fused[:, others], refined[:, others])
    refined[:, shared] *= 0.1  # never scaled down
    np.testing.assert_allclose(fused_keys(refined, network)[:, taken], np.clip((network - rest)[:, taken], 0, 1),
                               atol=1e-5)
    refined[:, shared] *= 40.0  # 10 times: scaled up 4 times at most
    np.testing.assert_allclose(fused_keys(refined, network)[:, taken],
                               np.clip(4.0 * (network - rest)[:, taken], 0, 1), atol=1e-5)


def test_the_keys_both_read_are_the_mean_of_both_motions_at_the_refinement_s_size():
    """AVERAGED_KEYS: where the network sees the same motion at a third of the size, the average is the
    refinement's key; where the network's motion differs, the average lies halfway (the network's scaled to the
    refinement's spread); a key the network does not move at all keeps half the refinement's motion on its rest.
    The blinks are the refinement's (the network misses winks)."""
    from serep_engine.retarget.arkit import AVERAGED_KEYS, REST_QUANTILE, fused_keys

    rng = np.random.default_rng(4)
    frames = 60
    jaw, smile, brow = (ARKIT_NAMES.index(name) for name in ("jawOpen", "mouthSmileLeft", "browInnerUp"))
    assert {"jawOpen", "mouthSmileLeft", "browInnerUp"} <= set(AVERAGED_KEYS) and "eyeBlinkLeft" not in AVERAGED_KEYS
    refined = np.full((frames, 52), 0.05, np.float32)
    network = np.full((frames, 52), 0.02, np.float32)
    speech = 0.6 * np.sin(np.linspace(0, 8, frames)) ** 2
    refined[:, jaw] += speech
    network[:, jaw] += speech / 3  # the same motion, read at a third
    refined[:, smile] += speech
    other = 0.2 * rng.uniform(0, 1, frames)
    network[:, smile] += other  # a different reading of it
    refined[:, brow] += speech  # a motion the network does not see
    fused = fused_keys(refined, network)
    np.testing.assert_allclose(fused[:, jaw], refined[:, jaw], atol=1e-5)
    rest = np.quantile(refined[:, smile], REST_QUANTILE)
    scaled = (other - np.quantile(other, REST_QUANTILE)) * speech.std() / other.std()
    np.testing.assert_allclose(fused[:, smile], np.clip(rest + (refined[:, smile] - rest + scaled) / 2, 0, 1),
                               atol=1e-5)
    rest = np.quantile(refined[:, brow], REST_QUANTILE)
    np.testing.assert_allclose(fused[:, brow], rest + (refined[:, brow] - rest) / 2, atol=1e-5)
    blink = ARKIT_NAMES.index("eyeBlinkLeft")
    refined[:, blink] += speech  # a wink the network does not see stays whole
    np.testing.assert_array_equal(fused_keys(refined, network)[:, blink], refined[:, blink])


def test_the_blinks_second_reading_is_the_tracker_s_own_scores():
    """TRACKER_KEYS (the blinks) are the mean of the refinement's and the tracker's motion, the tracker's scaled to the
    refinement's size: a tracker that reads the same blinks and wink at half their size leaves the refinement's
    keys, one that reads a different closing moves them halfway; without the tracker's scores the blinks are the
    refinement's. `tracker_keys` puts the tracker's scores in ARKit order (tongueOut, which it lacks, 0)."""
    from serep_engine.retarget.arkit import TRACKER_KEYS, fused_keys, mean_motion, tracker_keys
    from serep_engine.track.tracking import BLENDSHAPE_NAMES

    frames = 60
    blinks = [ARKIT_NAMES.index(name) for name in TRACKER_KEYS]
    assert TRACKER_KEYS == ("eyeBlinkLeft", "eyeBlinkRight")
    refined = np.full((frames, 52), 0.05, np.float32)
    network = np.full((frames, 52), 0.02, np.float32)
    refined[20:26, blinks] += 0.9  # a blink
    refined[40:50, blinks[0]] += 0.8  # a left wink (which the network does not see)
    tracker = np.zeros((frames, 52), np.float32)
    tracker[:, blinks] = 0.1 + (refined[:, blinks] - 0.05) / 2  # the same, at half the size
    np.testing.assert_allclose(fused_keys(refined, network, tracker)[:, blinks], refined[:, blinks], atol=1e-5)
    np.testing.assert_array_equal(fused_keys(refined, network)[:, blinks], refined[:, blinks])
    other = tracker.copy()
    other[30:36, blinks] += 0.3  # a closing the refinement does not read
    fused = fused_keys(refined, network, other)[:, blinks]
    np.testing.assert_allclose(fused, mean_motion(refined[:, blinks].astype(np.float64), other[:, blinks]), atol=1e-6)
    assert 0.05 < fused[33, 0] < 0.05 + 0.9 * 0.3 * 2 and fused[45, 0] > 0.6 and fused[45, 1] < 0.1  # wink kept
    scores = np.arange(2 * len(BLENDSHAPE_NAMES), dtype=np.float32).reshape(2, -1)
    keys = tracker_keys(scores)
    assert keys[1, ARKIT_NAMES.index("jawOpen")] == scores[1, BLENDSHAPE_NAMES.index("jawOpen")]
    assert keys[:, ARKIT_NAMES.index("tongueOut")].tolist() == [0.0, 0.0]


def test_brow_down_is_the_network_s_reading_averaged_with_the_tracker_s():
    """BROW_DOWN_KEYS: the network's reading (as NETWORK_KEYS: its motion at the clip's gain), averaged with the
    tracker's scores when known (`mean_motion`, the network's reading first): a tracker reading the same frown larger
    adds half its motion, a frown only the tracker reads shows, a side the tracker reads flat keeps half the network's
    motion."""
    from serep_engine.retarget.arkit import BROW_DOWN_KEYS, REST_QUANTILE, fused_keys, mean_motion

    frames = 60
    brows = [ARKIT_NAMES.index(name) for name in BROW_DOWN_KEYS]
    refined = np.full((frames, 52), 0.2, np.float32)  # the refinement's browDown is not used
    network = np.full((frames, 52), 0.02, np.float32)
    frown = 0.3 * np.sin(np.linspace(0, 6, frames)) ** 2
    network[:, brows] += frown[:, None]
    alone = fused_keys(refined, network)[:, brows]
    rest = np.quantile(network[:, brows], REST_QUANTILE, axis=0)
    np.testing.assert_allclose(alone, np.clip(network[:, brows] - rest, 0, 1), atol=1e-5)  # gain 1: no shared motion
    tracker = np.zeros((frames, 52), np.float32)
    tracker[:, brows] = 2 * frown[:, None]  # the same frown, larger: the tracker's motion is not scaled down
    np.testing.assert_allclose(fused_keys(refined, network, tracker)[:, brows], 1.5 * alone, atol=1e-4)
    tracker[:, brows] = 0.0
    tracker[40:46, brows[0]] = 0.5  # a frown only the tracker reads
    fused = fused_keys(refined, network, tracker)[:, brows]
    np.testing.assert_allclose(fused, mean_motion(alone.astype(np.float64), tracker[:, brows]), atol=1e-6)
    assert fused[42, 0] > alone[42, 0] + 0.1  # the tracker's frown shows
    low = np.quantile(alone[:, 1], REST_QUANTILE)
    np.testing.assert_allclose(fused[:, 1], low + (alone[:, 1] - low) / 2, atol=1e-6)  # a side it reads flat: halved


def test_a_turned_head_s_far_side_is_read_from_its_near_side():
    """`far_side_from_near`: frontal or up to FAR_SIDE_FROM_DEG the keys are untouched; turned FAR_SIDE_HIDDEN_DEG (or
    more) the far side's keys of every left-right pair are the near side's (negative yaw: the face's left is near),
    halfway in between; mouthLeft / mouthRight (a direction, not a side) and the gaze are never mirrored; NaN yaw is
    frontal. `head_yaw` reads the turn from the tracker's matrices."""
    from serep_engine.retarget.arkit import (FAR_SIDE_FROM_DEG, FAR_SIDE_HIDDEN_DEG, SIDE_PAIRS, far_side_from_near,
                                             fused_keys, head_yaw)

    rng = np.random.default_rng(5)
    keys = rng.uniform(0, 1, (6, 52)).astype(np.float32)
    middle = (FAR_SIDE_FROM_DEG + FAR_SIDE_HIDDEN_DEG) / 2
    yaw = np.array([0.0, FAR_SIDE_FROM_DEG, -FAR_SIDE_HIDDEN_DEG, 80.0, middle, np.nan])
    out = far_side_from_near(keys, yaw)
    left, right = (np.array([ARKIT_NAMES.index(pair[side]) for pair in SIDE_PAIRS]) for side in (0, 1))
    assert ("eyeBlinkLeft", "eyeBlinkRight") in SIDE_PAIRS and ("mouthSmileLeft", "mouthSmileRight") in SIDE_PAIRS
    assert not {"mouthLeft", "mouthRight", "eyeLookInLeft"} & {name for pair in SIDE_PAIRS for name in pair}
    np.testing.assert_array_equal(out[[0, 1, 5]], keys[[0, 1, 5]])
    np.testing.assert_array_equal(out[2, left], keys[2, left])  # turned to the right: the left side is near
    np.testing.assert_allclose(out[2, right], keys[2, left], atol=1e-6)
    np.testing.assert_allclose(out[3, left], keys[3, right], atol=1e-6)
    np.testing.assert_array_equal(out[3, right], keys[3, right])
    np.testing.assert_allclose(out[4, left], (keys[4, left] + keys[4, right]) / 2, atol=1e-6)
    unpaired = np.setdiff1d(np.arange(52), np.concatenate([left, right]))
    np.testing.assert_array_equal(out[:, unpaired], keys[:, unpaired])
    refined = rng.uniform(0, 0.5, (40, 52)).astype(np.float32)
    turned = np.full(40, -FAR_SIDE_HIDDEN_DEG)
    np.testing.assert_allclose(fused_keys(refined, refined, None, turned), far_side_from_near(
        fused_keys(refined, refined), turned), atol=1e-6)
    angle = np.radians(-40.0)
    matrix = np.eye(4)
    matrix[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    np.testing.assert_allclose(head_yaw(np.stack([matrix, np.full((4, 4), np.nan)])), [-40.0, np.nan])


def _result_with_arkit(tmp_path):
    from serep_engine.contract.result import CaptureResult

    rng = np.random.default_rng(2)
    n = 5
    result = CaptureResult(frames=np.arange(10, 10 + n), fps=30.0, face_found=np.ones(n, bool),
                           codes=rng.standard_normal((n, 4)), head_pose=np.zeros((n, 6)),
                           basis=rng.standard_normal((2, 7, 3)), weights=rng.standard_normal((n, 2)),
                           arkit_names=np.array(ARKIT_NAMES), arkit_weights=rng.uniform(0, 1, (n, 52)))
    result.head_pose[:, 1] = 0.2  # a turn about the vertical axis
    return result, result.save(tmp_path / "take.npz")


def test_livelink_csv_parses_with_its_header(tmp_path):
    result, _ = _result_with_arkit(tmp_path)
    path = write_livelink_csv(tmp_path / "take.csv", result.frames, result.fps, result.arkit_names,
                              result.arkit_weights, result.head_pose)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == LIVELINK_HEADER and len(LIVELINK_HEADER) == 63
    assert len(rows) == result.n_frames
    assert rows[0]["Timecode"] == "00:00:00:10.000" and rows[0]["BlendShapeCount"] == "61"
    jaw = ARKIT_NAMES.index("jawOpen")
    assert [float(r["JawOpen"]) for r in rows] == pytest.approx(result.arkit_weights[:, jaw], abs=1e-6)
    assert float(rows[0]["HeadYaw"]) == pytest.approx(0.2, abs=1e-6)


def test_export_command_writes_csv_and_json(tmp_path, capsys):
    from serep_engine.cli import main

    result, path = _result_with_arkit(tmp_path)
    assert main(["export", str(path), "--livelink", str(tmp_path / "a.csv"), "--json", str(tmp_path / "a.json")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == result.n_frames
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["names"] == list(ARKIT_NAMES) and document["absent"] == ["tongueOut"]
    np.testing.assert_allclose(document["weights"], result.arkit_weights, atol=1e-6)
    # A result without ARKit weights: a one-line error, nothing written.
    plain = tmp_path / "plain.npz"
    result.arkit_names = result.arkit_weights = None
    result.save(plain)
    assert main(["export", str(plain), "--json", str(tmp_path / "b.json")]) == 1
    assert "no ARKit weights" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    with pytest.raises(ValueError, match="nothing to write"):
        export_result(path)


@pytest.mark.slow
def test_a_full_blink_closes_eyes_that_open_wider_than_the_templates(face_model):
    """The ARKit-reference-like test head (thin lips on a closed mouth, eyes 1.4x taller): a full blink closes
    the lids about as far as ICT's own blink closes the template's (0.12-0.15 of the opening left), where the
    carried shapes alone leave over 0.3 open; the upper lip stays put when the jaw opens."""
    from serep_engine.eval.retarget import HEADS, _make_head, head_shapes, user_checks
    from serep_engine.retarget.fit import decoded_blinks
    from serep_engine.expression.model import ExpressionModel

    head = _make_head(face_model, HEADS[-1], seed=0)
    assert head.name.startswith("reference")
    model = ExpressionModel.from_pretrained("cpu", face_model)
    shapes = head_shapes(face_model, head)
    registration = fit_target(face_model, head.vertices, head.triangles, use_cache=False)
    without = user_checks(face_model, model, head, registration, shapes)
    closing = registration.with_closing_lids(face_model, decoded_blinks(face_model, model, registration.neutral))
    checks = user_checks(face_model, model, head, closing, shapes)
    assert without["blink_open"] > 0.3 and 0.0 < checks["blink_open"] < 0.2, (without, checks)
    assert checks["upper_lip_mm"] < 3.0, checks
    # linear still, and unchanged away from the eyes
    jaw = face_model.face_expression_basis[list(face_model.expression_names).index("jawOpen")]
    chin = face_model.face_neutral[:, 1] < face_model.face_neutral[face_model.landmarks68[57], 1]
    np.testing.assert_allclose(closing.to_user(jaw * chin[:, None]), registration.to_user(jaw * chin[:, None]),
                               atol=1e-6)
