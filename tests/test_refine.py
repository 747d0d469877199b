"""Codes refined against landmarks (capture/refine.py): landmarks made from a known code on the template, seen
through a camera (moved, turned, scaled, in image pixels with y down), are fitted back from a wrong prior; an
actor's own face shape shared by every frame is not read as expression; the open-mouth correspondence separates
the lips; frames without a face keep their codes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the refinement needs torch (none for Python 3.13)")

from serep_engine.capture.refine import LandmarkRefiner, RefineSettings
from serep_engine.eval.real import mediapipe_measures
from serep_engine.expression.model import ExpressionModel
from serep_engine.track.correspondence import LIP_POINTS, mediapipe_to_template


@pytest.fixture(scope="module")
def setup(face_model):
    model = ExpressionModel.from_pretrained("cpu", face_model)
    with torch.no_grad():
        basis = model.identity_basis(face_model.face_neutral).numpy()
        shapes = torch.from_numpy(face_model.face_expression_basis)
        names = list(face_model.expression_names)
        jaw = model.encode_displacements(shapes[names.index("jawOpen")], torch.from_numpy(basis))
        blink = model.encode_displacements(shapes[names.index("eyeBlink_L")], torch.from_numpy(basis))
    vertex, _ = mediapipe_to_template(face_model, open_mouth=True)
    return basis, vertex, jaw.numpy(), blink.numpy()


def _seen(face_model, basis, vertex, codes, offset=0.0):
    """(F, 478, 3) mediapipe-style points of the decoded codes: image pixels, y down, depth away from the camera."""
    meshes = face_model.face_neutral[None] + offset + np.tensordot(codes, basis, axes=1)
    angle = np.radians(10.0)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    camera = meshes[:, vertex] @ turn.T * 23.0 * [1.0, -1.0, -1.0] + [640.0, 360.0, 0.0]
    return camera.astype(np.float32)


def _measures(face_model, basis, vertex, codes) -> np.ndarray:
    """(F, 3) lip gap and left and right eye openings of the decoded codes, read at mediapipe's points."""
    meshes = face_model.face_neutral[None] + np.tensordot(codes, basis, axes=1)
    return np.array([[m[name] for name in ("lip_gap", "eye_left", "eye_right")]
                     for m in (mediapipe_measures(mesh[vertex]) for mesh in meshes)])


def test_a_known_code_is_fitted_back_from_a_wrong_prior(face_model, setup):
    """Open mouth and a left wink from landmarks, with the network's prior at zero (the neutral face): the refined
    code's mesh opens the mouth and closes the left eye as the known code does (the measures of the benchmark; a
    wink's change is 0.22, an open mouth's 0.2)."""
    basis, vertex, jaw, blink = setup
    truth = np.stack([0.6 * jaw, blink, 0.6 * jaw + blink])
    refined = LandmarkRefiner(face_model, basis).refine(_seen(face_model, basis, vertex, truth), np.zeros_like(truth))
    got, want = _measures(face_model, basis, vertex, refined), _measures(face_model, basis, vertex, truth)
    np.testing.assert_allclose(got, want, atol=0.03)
    neutral = _measures(face_model, basis, vertex, np.zeros_like(jaw[None]))[0]
    assert got[1, 1] < 0.5 * neutral[1] and got[1, 2] > 0.9 * neutral[2]  # the wink closes the left eye only


def test_the_prior_decides_what_the_landmarks_cannot_see(face_model, setup):
    """With no landmarks' pull (sigma huge) the codes stay the network's; with the default, the face they decode to
    follows the points (codes themselves are not unique: the prior keeps what the points do not show)."""
    basis, vertex, jaw, _ = setup
    prior = np.random.default_rng(0).normal(0, 0.3, (2, len(jaw))).astype(np.float32)
    seen = _seen(face_model, basis, vertex, np.stack([jaw, 0.3 * jaw]))
    loose = LandmarkRefiner(face_model, basis, settings=RefineSettings(sigma_cm=1e3)).refine(seen, prior)
    np.testing.assert_allclose(loose, prior, atol=1e-3)
    tight = LandmarkRefiner(face_model, basis).refine(seen, prior)
    want = _measures(face_model, basis, vertex, np.stack([jaw, 0.3 * jaw]))
    np.testing.assert_allclose(_measures(face_model, basis, vertex, tight), want, atol=0.04)
    assert np.abs(_measures(face_model, basis, vertex, prior) - want).max() > 0.1


def test_a_face_shape_shared_by_the_clip_is_not_expression(face_model, setup):
    """An actor whose face differs from the template (an ICT identity mode at 2 sigma) by the same offset in every
    frame: the refined faces open and close from the clip's first (neutral) frame as the template's own face would,
    within 15% (face shape and expression share directions: the eyes' absolute opening may differ by ~0.04, 10%)."""
    basis, vertex, jaw, blink = setup
    codes = np.stack([0.0 * jaw, 0.5 * jaw, jaw + blink, 0.2 * jaw])
    offset = 2.0 * face_model.identity_basis[0, :len(face_model.face_neutral)]
    refiner = LandmarkRefiner(face_model, basis)
    actor = refiner.refine(_seen(face_model, basis, vertex, codes, offset), np.zeros_like(codes))
    got, want = _measures(face_model, basis, vertex, actor), _measures(face_model, basis, vertex, codes)
    np.testing.assert_allclose(got - got[0], want - want[0], rtol=0.15, atol=0.02)
    np.testing.assert_allclose(got, want, atol=0.05)


def test_eyelids_keep_the_network_s_depth(face_model, setup):
    """Points that close a lid in the image can be met by lid vertices sunk behind the eyeball (the lid then looks
    open: seen on a real wink); the eyelid points keep the prior's depth, so a wink is fitted by closing the lid.
    Here the seen lid points are only pushed 3 mm away from the camera: with the depth prior off the lids follow
    them back, with it they stay within a fifth of that."""
    from serep_engine.capture.refine import EYE_POINTS

    basis, vertex, _, blink = setup
    seen = _seen(face_model, basis, vertex, blink[None])
    seen[:, list(EYE_POINTS), 2] += 0.3 * 23.0
    lids = face_model.landmarks68[[37, 38, 40, 41, 43, 44, 46, 47]]

    def lid_depth(settings):
        refined = LandmarkRefiner(face_model, basis, settings=settings).refine(seen, blink[None])
        return np.tensordot(refined - blink[None], basis[:, lids, 2], axes=1)

    free, kept = lid_depth(RefineSettings(depth_prior=0.0)), lid_depth(RefineSettings())
    assert np.abs(free).mean() > 0.05 and np.abs(kept).mean() < 0.2 * np.abs(free).mean()


def test_frames_without_a_face_keep_their_codes(face_model, setup):
    basis, vertex, jaw, _ = setup
    seen = _seen(face_model, basis, vertex, np.stack([jaw, jaw]))
    seen[1] = np.nan
    prior = np.full((2, len(jaw)), 0.25, np.float32)
    refined = LandmarkRefiner(face_model, basis).refine(seen, prior)
    np.testing.assert_array_equal(refined[1], prior[1])
    assert not np.allclose(refined[0], prior[0])


def test_the_open_mouth_correspondence_puts_each_inner_lip_point_on_its_own_lip(face_model):
    """On the closed template the upper and lower inner-lip points meet; from the open-mouth render each pair of
    mediapipe's inner-lip points (13/14, 82/87, 312/317) lands on two vertices, the upper one above; the other
    points keep the closed mapping."""
    closed, _ = mediapipe_to_template(face_model)
    opened, valid = mediapipe_to_template(face_model, open_mouth=True)
    jaw = face_model.face_neutral + 0.4 * face_model.face_expression_basis[list(face_model.expression_names).index(
        "jawOpen")]
    for upper, lower in ((13, 14), (82, 87), (312, 317)):
        assert valid[upper] and valid[lower]
        assert jaw[opened[upper], 1] > jaw[opened[lower], 1] + 0.3
    others = ~np.isin(np.arange(478), LIP_POINTS)
    np.testing.assert_array_equal(opened[others], closed[others])


def test_an_actor_s_rest_is_taken_off_and_their_blinks_still_close(face_model, setup):
    """An actor whose left lid hangs lower than the template's (a constant the identity modes do not take; their
    blink shuts it from there): refined alone, every frame reads a lid a good part closed; with the clip's rest, read
    on its calm frames (mouth closed, eyes open) where the network reads the neutral face, the calm frames decode to
    the neutral's eyes and mouth, the mouth opens as far as without the rest, and the blink closes the lid further
    than a shift of the codes by their rest would (that leaves the droop's part of the blink out), short of passing
    it through the lower lid. (Not all the way: the lids fade to where the eye's opening at mediapipe's points is
    zero, as mediapipe reads a real shut eye, 0.01-0.05 of its width; on the template a blink leaves these points 0.13
    apart.)"""
    from serep_engine.capture.refine import calm_frames, expression_activity, eye_openings, lip_gap
    from serep_engine.track.tracking import BLENDSHAPE_NAMES

    basis, vertex, jaw, blink = setup
    motion = np.stack([0.0 * jaw] * 6 + [jaw, 0.6 * jaw, 0.7 * blink, 0.5 * jaw + 0.35 * blink] * 3)
    seen = _seen(face_model, basis, vertex, motion, 0.3 * np.tensordot(blink, basis, axes=1))
    network = 0.3 * motion  # under-reads the motion, reads no droop
    scores = np.zeros((len(motion), len(BLENDSHAPE_NAMES)), np.float32)  # the Face Landmarker's: none at rest
    scores[:, BLENDSHAPE_NAMES.index("jawOpen")] = np.abs(motion).sum(1)
    calm = calm_frames(lip_gap(seen), expression_activity(scores), eye_openings(seen))
    assert sorted(calm) == [0, 1]  # a tenth of 18: the first of the calm, closed-mouth, open-eyed frames
    refiner = LandmarkRefiner(face_model, basis)
    alone = refiner.refine(seen, network)
    rest = refiner.clip_rest(seen, network, scores)
    rested = refiner.refine(seen, network, rest=rest)
    shifted = alone - (alone[0] - network[0])
    (alone_seen, rested_seen, shifted_seen), neutral = (
        [_measures(face_model, basis, vertex, codes) for codes in (alone, rested, shifted)],
        _measures(face_model, basis, vertex, np.zeros_like(jaw[None]))[0])
    assert alone_seen[0, 1] < 0.85 * neutral[1]  # the droop read as a lid a good part closed
    np.testing.assert_allclose(rested_seen[:6], np.repeat(neutral[None], 6, axis=0), atol=0.01)
    np.testing.assert_allclose(rested_seen[6, 0] - rested_seen[0, 0], alone_seen[6, 0] - alone_seen[0, 0], atol=0.01)
    lids = face_model.landmarks68[[43, 44, 47, 46]]  # the left eye's upper lid points, then the lower ones below them
    blinked = face_model.face_neutral + np.tensordot(rested[8], basis, axes=1)
    shut = _measures(face_model, basis, vertex, blink[None])[0]
    assert (blinked[lids[:2], 1] > blinked[lids[2:], 1]).all() and rested_seen[8, 1] > shut[1] - 0.01
    assert rested_seen[8, 1] < shifted_seen[8, 1] - 0.02


def test_the_head_s_pose_is_read_on_what_expressions_do_not_move(face_model, setup):
    """The similarity that takes the points onto the template counts each point by how little ICT's expressions
    move it: the eyelids and brows not at all, the lips, chin and forehead (moved by the jaw, smiles and brow raises)
    least. A head turned, scaled and moved is put back exactly, and points that count for nothing do not move the
    pose however far they are from the model (a frown's brows are not read as a nod)."""
    from serep_engine.capture.refine import BROW_POINTS, EYE_POINTS, align

    basis, vertex, _, _ = setup
    refiner = LandmarkRefiner(face_model, basis)
    weights, points = refiner.pose_weights, refiner.points
    assert (weights[np.isin(points, EYE_POINTS + BROW_POINTS)] == 0).all()
    lips, nose_bridge = np.isin(points, (13, 14, 0, 17)), np.isin(points, (6, 168, 197))
    assert weights[lips].max() < 0.05 < 0.3 < weights[nose_bridge].min()

    neutral = face_model.face_neutral[vertex[points]]
    angle = np.radians(20.0)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    seen = neutral @ turn.T * 23.0 + [5.0, -3.0, 2.0]
    np.testing.assert_allclose(align(seen[None], neutral[None], weights)[0], neutral, atol=1e-4)
    brows = np.isin(points, BROW_POINTS)
    frowning = seen.copy()
    frowning[brows, 1] -= 0.5 * 23.0
    moved = align(frowning[None], neutral[None], weights)[0]
    np.testing.assert_allclose(moved[~brows], neutral[~brows], atol=1e-4)
