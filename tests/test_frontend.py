import numpy as np
import pytest

from serep_engine.paths import data_dir
from serep_engine.track.filters import OneEuroFilter
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
