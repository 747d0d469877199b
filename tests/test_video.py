import numpy as np
import pytest

from serep_engine.paths import data_dir
from serep_engine.track.video import VideoError, probe, read_frames

OBAMA = data_dir() / "real" / "videos" / "obama.mp4"


@pytest.fixture(scope="module")
def clip():
    if not OBAMA.exists():
        pytest.skip(f"real clips not found at {OBAMA.parent}")
    return OBAMA


def test_probe_reads_the_clips_own_fps_and_size(clip):
    info = probe(clip)
    assert info.fps == pytest.approx(25.0) and (info.width, info.height) == (1280, 720)
    assert info.frame_count > 100


def test_frame_range_streams_in_order(clip):
    frames = list(read_frames(clip, start=10, end=14))
    assert [i for i, _ in frames] == [10, 11, 12, 13]
    assert frames[0][1].shape == (720, 1280, 3) and frames[0][1].dtype == np.uint8
    whole = dict(read_frames(clip, start=0, end=12))
    np.testing.assert_array_equal(whole[11], frames[1][1])  # seeking lands on the same frame


def test_bad_clips_say_what_is_wrong(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        probe(tmp_path / "missing clip é.mp4")
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="not a video|no readable frames"):
        probe(noise)
    with pytest.raises(VideoError, match="folder"):
        probe(tmp_path)


def test_reading_past_the_end_stops_cleanly(clip):
    """obama.mp4's container claims 158 frames but 55 decode: streaming trusts the decoder, not the header."""
    info = probe(clip)
    decoded = sum(1 for _ in read_frames(clip))
    assert 0 < decoded <= info.frame_count
    assert [i for i, _ in read_frames(clip, start=decoded - 2, end=decoded + 50)] == [decoded - 2, decoded - 1]
    assert list(read_frames(clip, start=info.frame_count + 10)) == []
    with pytest.raises(VideoError, match="frame range"):
        list(read_frames(clip, start=5, end=5))
