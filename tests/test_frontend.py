import numpy as np
import pytest

from serep_engine.paths import data_dir
from serep_engine.track.filters import OneEuroFilter, one_euro_pass, smooth_codes
from serep_engine.track.frontend import front_end

CLIP = data_dir() / "real" / "videos" / "liveportrait_d0.mp4"


def test_one_euro_removes_jitter_but_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200) / 30.0
    truth = np.where(t < 3, 0.0, 10.0)  # still, then a jump
    noisy = truth + rng.normal(0, 0.5, len(t))
    smooth_filter = OneEuroFilter(30.0, min_cutoff=0.5, beta=0.05)
    smooth = np.array([smooth_filter(np.array([v]))[0] for v in noisy])
    still = t < 3
    assert np.std(smooth[still][10:]) < 0.4 * np.std(noisy[still][10:])
    assert abs(smooth[int(3.5 * 30)] - 10.0) < 1.5  # it follows a fast move within half a second


def test_code_smoothing_adds_no_lag_and_restarts_after_a_gap():
    """A noisy bump: the smoothed codes peak on the bump's own frame (a forward-only One Euro pass peaks late),
    are smoother than the input, and a frame without a face restarts both passes (no value carried across)."""
    rng = np.random.default_rng(1)
    frames = np.arange(120)
    bump = 5.0 * np.exp(-0.5 * ((frames - 60) / 4.0) ** 2)
    noisy = (bump + rng.normal(0, 0.3, len(frames)))[:, None].repeat(2, axis=1)
    smooth = smooth_codes(noisy, 30.0, 1.0)
    forward = one_euro_pass(noisy, 30.0, 1.0, np.ones(len(frames), bool))
    centre = lambda values: float((values[40:81, 0] * frames[40:81]).sum() / values[40:81, 0].sum())  # noqa: E731
    assert abs(centre(smooth) - 60.0) < 0.5 < centre(forward) - 60.0
    assert np.abs(np.diff(smooth[:30, 0])).mean() < 0.5 * np.abs(np.diff(noisy[:30, 0])).mean()
    np.testing.assert_array_equal(smooth_codes(noisy, 30.0, 0.0), noisy.astype(np.float32))
    steps = np.where(frames < 50, 0.0, 8.0)[:, None]
    found = frames != 50
    split = smooth_codes(steps, 30.0, 1.0, found)
    np.testing.assert_allclose(split[:50], 0.0, atol=1e-6)  # the backward pass restarted at the gap
    np.testing.assert_allclose(split[51:], 8.0, atol=1e-6)


def test_front_end_crops_real_footage_steadily():
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    smoothed = list(front_end(CLIP, 0, 40, crop_size=128))
    raw = list(front_end(CLIP, 0, 40, crop_size=128, crop_smoothing=0))
    assert len(smoothed) == 40 and all(f.found for f in smoothed)
    assert smoothed[0].crop.shape == (128, 128, 3)

    def jitter(frames):
        centres = np.array([np.linalg.inv(np.vstack([f.transform, [0, 0, 1]]))[:2] @ [64, 64, 1] for f in frames])
        return np.abs(np.diff(centres, n=2, axis=0)).mean()  # acceleration of the crop centre, pixels

    assert jitter(smoothed) < jitter(raw)
    # the crop holds the face where the synthetic crops hold it: the nose tip near the canonical point
    nose = smoothed[20].transform @ np.append(smoothed[20].landmarks[1, :2], 1)
    assert np.linalg.norm(nose - np.array([0.5, 0.57]) * 128) < 0.08 * 128


def test_the_landmarker_reads_blendshapes_and_the_head_matrix_per_frame():
    """The Face Landmarker's 52 blendshape scores (its own names, in its order) and its facial transformation
    matrix (a rotation and a translation in cm) come with every tracked frame; frames without a face hold NaN."""
    from serep_engine.track.tracking import BLENDSHAPE_NAMES, FaceTracker

    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    frames = list(front_end(CLIP, 0, 10))
    scores = np.array([f.observation.blendshapes for f in frames])
    assert scores.shape == (10, len(BLENDSHAPE_NAMES)) and ((scores >= 0) & (scores <= 1)).all()
    matrix = frames[5].observation.matrix
    np.testing.assert_allclose(matrix[:3, :3] @ matrix[:3, :3].T, np.eye(3), atol=1e-3)
    assert -200 < matrix[2, 3] < -10  # the face in front of the camera, tens of cm away
    from serep_engine.track.video import read_frames

    _, rgb = next(read_frames(CLIP))
    with FaceTracker(video=False) as tracker:
        (names,) = [[c.category_name for c in face] for face in tracker._detect(rgb, still=True).face_blendshapes]
        nothing = tracker.track(np.zeros((64, 64, 3), np.uint8))
    assert tuple(names) == BLENDSHAPE_NAMES
    assert not nothing.found and np.isnan(nothing.blendshapes).all() and np.isnan(nothing.matrix).all()


def test_a_face_read_in_a_mirrored_view_is_the_face_itself():
    """The tracker's re-find also reads mirrored views: un-mirrored, the landmarks (each taking its mirror partner's
    place), the blendshapes (left and right swapped) and the head's matrix are what the view itself gives."""
    import cv2

    from serep_engine.track.tracking import BLENDSHAPE_NAMES, REFIND_SIZE, FaceTracker
    from serep_engine.track.video import read_frames

    clip = data_dir() / "real" / "videos" / "liveportrait_d3.mp4"  # winks: left and right differ
    if not clip.exists():
        pytest.skip(f"real clips not found at {clip.parent}")
    frames = [rgb for index, rgb in read_frames(clip, 0, 24) if index in (0, 14)]
    with FaceTracker(video=False, max_faces=1) as tracker:
        for rgb in frames:
            box = tracker.track(rgb).box
            centre, side = (box[:2] + box[2:]) / 2, 1.6 * max(box[2:] - box[:2])
            scale = REFIND_SIZE / side
            view = cv2.warpAffine(rgb, np.array([[scale, 0, REFIND_SIZE / 2 - scale * centre[0]],
                                                 [0, scale, REFIND_SIZE / 2 - scale * centre[1]]]),
                                  (REFIND_SIZE, REFIND_SIZE))
            direct = tracker.track(view)
            mirrored = tracker._unmirrored(tracker.track(np.ascontiguousarray(view[:, ::-1])))
            assert direct.found and mirrored.found
            distance = np.linalg.norm(direct.landmarks[:468, :2] - mirrored.landmarks[:468, :2], axis=1)
            assert np.median(distance) < 0.01 * REFIND_SIZE, np.median(distance)
            np.testing.assert_allclose(mirrored.matrix[:3, :3], direct.matrix[:3, :3], atol=0.1)
    # mediapipe's blendshape network is not mirror-symmetric itself (gaze scores differ by up to 0.3 between a
    # view and its mirror image); the wink of frame 14 must stay on its side
    wink = [BLENDSHAPE_NAMES.index(name) for name in ("eyeBlinkLeft", "eyeBlinkRight")]
    assert direct.blendshapes[wink[0]] - direct.blendshapes[wink[1]] > 0.3
    np.testing.assert_allclose(mirrored.blendshapes[wink], direct.blendshapes[wink], atol=0.1)
