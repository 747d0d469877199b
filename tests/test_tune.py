"""The animator's controls on a kept result (serep_engine/tune), on a real iPhone take imported onto the template:
the default controls give back the engine's own bake, strength and region multipliers act where they should,
calibration zeroes the rest frames, ARKit gains and offsets, the head's rest pose, clear refusals."""

from pathlib import Path

import numpy as np
import pytest

from serep_engine.contract import read_take
from serep_engine.contract.arkit import ARKIT_NAMES
from serep_engine.tune import (REGIONS, Tuning, TuningError, find_neutral, frame_displacement, relative_head_pose,
                               retune)

TAKES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "arkit_takes"


@pytest.fixture(scope="module")
def takes():
    """apfel.csv imported onto the template twice: with the engine's default smoothing, and unsmoothed (as the
    add-on captures, smoothing at bake time)."""
    if not TAKES.is_dir():
        pytest.skip(f"real ARKit takes not found at {TAKES}")
    from serep_engine.engine import CaptureOptions, Engine

    engine = Engine.from_pretrained("cpu")
    take = read_take(TAKES / "apfel.csv")
    return {"smoothed": engine.import_take(take, options=CaptureOptions(smoothing=1.0, rebake=True)),
            "raw": engine.import_take(take, options=CaptureOptions(smoothing=0.0, rebake=True))}


def displacements(result) -> np.ndarray:
    return np.einsum("fk,kvi->fvi", result.weights, result.basis)


def mean_motion(displacement: np.ndarray) -> float:
    return float(np.linalg.norm(displacement, axis=-1).mean())


def row_of(result, name: str) -> int:
    """The found row where ARKit shape `name` is strongest."""
    column = ARKIT_NAMES.index(name)
    return int(np.argmax(np.where(result.face_found, result.arkit_weights[:, column], -1)))


@pytest.mark.slow
def test_the_default_controls_give_back_the_engines_bake(takes):
    result = takes["smoothed"]
    again = retune(result, Tuning(smoothing=1.0))
    np.testing.assert_allclose(again.codes, result.codes, atol=1e-6)
    np.testing.assert_allclose(displacements(again), displacements(result), atol=1e-5)
    np.testing.assert_array_equal(again.arkit_weights, result.arkit_weights)  # smoothed at capture: kept
    # an unsmoothed capture smoothed at bake time is the smoothed capture
    np.testing.assert_allclose(retune(takes["raw"], Tuning(smoothing=1.0)).codes, result.codes, atol=1e-5)


@pytest.mark.slow
def test_strength_and_region_multipliers(takes, face_model):
    from serep_engine.facemodel.regions import region_masks

    result = takes["raw"]
    base = retune(result, Tuning(smoothing=0.0), codes_only=True).codes
    np.testing.assert_allclose(retune(result, Tuning(smoothing=0.0, strength=0.5), codes_only=True).codes,
                               0.5 * base, atol=1e-6)
    assert mean_motion(displacements(retune(result, Tuning(smoothing=0.0, strength=0.0)))) < 1e-6
    # a region at 0 takes away its own motion and leaves the rest of the face as it was
    masks = region_masks(face_model)

    def motion(codes, row, region):
        return mean_motion(frame_displacement(result, codes, row)[masks[region]])

    for region, shape, moves, stays in [("jaw", "jawOpen", "mouth", "forehead"),
                                        ("brows", "browInnerUp", "forehead", "mouth")]:
        row = row_of(result, shape)
        off = retune(result, Tuning(smoothing=0.0, regions={region: 0.0}), codes_only=True).codes
        assert motion(off, row, moves) < 0.4 * motion(base, row, moves)
        assert motion(off, row, stays) == pytest.approx(motion(base, row, stays), rel=0.05)
    # every region at 0 leaves only what ICT's ARKit shapes do not span: a few percent of the motion
    nothing = retune(result, Tuning(smoothing=0.0, regions=dict.fromkeys(REGIONS, 0.0)), codes_only=True).codes
    assert mean_motion(nothing @ result.code_basis.reshape(64, -1)) < 0.05 * mean_motion(
        base @ result.code_basis.reshape(64, -1))
    with pytest.raises(ValueError, match="unknown strength regions"):
        retune(result, Tuning(regions={"ears": 2.0}))


@pytest.mark.slow
def test_neutral_calibration(takes):
    result = takes["raw"]
    # one rest frame: it decodes to the template's neutral exactly
    frame = int(result.frames[100])
    calibrated = retune(result, Tuning(smoothing=0.0, neutral=(frame, frame + 1)))
    assert np.abs(frame_displacement(calibrated, calibrated.codes, 100)).max() < 1e-5
    # the most neutral quarter second, found: on every one of its frames the mesh is within 0.1 mm (mean over the
    # vertices) of the template's neutral
    start, end = find_neutral(result)
    rest = (result.frames >= start) & (result.frames < end)
    assert end - start == round(0.25 * result.fps) and result.face_found[rest].all()
    calibrated = retune(result, Tuning(neutral=(start, end)), codes_only=True)
    rows = np.flatnonzero((result.frames >= start) & (result.frames < end))
    per_frame_mm = [10 * mean_motion(frame_displacement(calibrated, calibrated.codes, row)) for row in rows]
    assert max(per_frame_mm) < 0.1
    # ARKit: the rest frames' weights are subtracted
    weights = retune(result, Tuning(smoothing=0.0, neutral=(frame, frame + 1))).arkit_weights
    assert np.abs(weights[100]).max() == 0.0
    with pytest.raises(TuningError, match="no frame with a face"):
        lost = int(result.frames[np.flatnonzero(~result.face_found)[0]])
        retune(result, Tuning(neutral=(lost, lost + 1)))


@pytest.mark.slow
def test_arkit_gain_offset_and_region(takes):
    result = takes["raw"]
    jaw, smile = ARKIT_NAMES.index("jawOpen"), ARKIT_NAMES.index("mouthSmileLeft")
    tuned = retune(result, Tuning(smoothing=0.0, arkit_gain={"jawOpen": 2.0}, arkit_offset={"mouthSmileLeft": 0.1},
                                  regions={"eyes": 0.0}), codes_only=True).arkit_weights
    np.testing.assert_allclose(tuned[:, jaw], np.clip(2 * result.arkit_weights[:, jaw], 0, 1), atol=1e-6)
    np.testing.assert_allclose(tuned[:, smile], np.clip(result.arkit_weights[:, smile] + 0.1, 0, 1), atol=1e-6)
    eyes = [i for i, name in enumerate(ARKIT_NAMES) if name.startswith("eye")]
    assert tuned[:, eyes].max() == 0.0 and result.arkit_weights[:, eyes].max() > 0.5
    with pytest.raises(TuningError, match="does not have: jawOpn"):
        retune(result, Tuning(arkit_gain={"jawOpn": 2.0}))


def test_head_rest_pose():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    pose = np.zeros((20, 6), np.float32)
    pose[:, :3] = Rotation.random(20, random_state=1).as_rotvec() * 0.5
    pose[:, 3:] = rng.normal(size=(20, 3))
    relative = relative_head_pose(pose, 7)
    assert np.abs(relative[7]).max() < 1e-6
    expected = (Rotation.from_rotvec(pose[:, :3]) * Rotation.from_rotvec(pose[7, :3]).inv()).as_rotvec()
    np.testing.assert_allclose(relative[:, :3], expected, atol=1e-5)
    np.testing.assert_allclose(relative[:, 3:], pose[:, 3:] - pose[7, 3:], atol=1e-6)
    # a half turn stays a half turn
    half = np.array([[0.0, np.pi, 0.0, 0, 0, 0], [0.0, 0.0, 0.0, 0, 0, 0]], np.float32)
    assert np.linalg.norm(relative_head_pose(half, 1)[0, :3]) == pytest.approx(np.pi, abs=1e-5)


def test_a_result_without_what_a_rebake_needs_is_refused():
    from serep_engine.contract import CaptureResult

    result = CaptureResult(frames=np.arange(3), fps=30.0, face_found=np.ones(3, bool), codes=np.zeros((3, 4)),
                           head_pose=np.zeros((3, 6)), basis=np.zeros((1, 5, 3)), weights=np.zeros((3, 1)))
    with pytest.raises(TuningError, match="lacks codes_raw, code_basis: capture the clip again"):
        retune(result, Tuning())
