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


def test_a_probe_kept_open_hands_its_decoder_to_the_first_read_once(clip):
    """The first frame is decoded once (obama.mp4's takes 0.13 s), and the frames are those of a fresh read."""
    fresh = [frame for _, frame in read_frames(probe(clip), 0, 12)]
    kept = probe(clip, keep_open=True)
    handed = [(index, frame) for index, frame in read_frames(kept, 0, 12)]
    assert [index for index, _ in handed] == list(range(12))
    assert all(np.array_equal(a, b) for a, (_, b) in zip(fresh, handed))
    again = [frame for _, frame in read_frames(kept, 0, 12)]  # the decoder was handed on once: this one is new
    assert all(np.array_equal(a, b) for a, b in zip(fresh, again))
    later = [index for index, _ in read_frames(probe(clip, keep_open=True), 5, 9)]
    assert later == [5, 6, 7, 8]
