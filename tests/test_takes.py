"""Live Link Face / ARKit takes read from the real iPhone recordings in ../shared/data/real/arkit_takes and from
files the exporter writes: every row accounted for, both spellings of the count column, lost-tracking rows,
fractional frame fields at the timecode's own rate, and a round trip through `serep export`."""

import numpy as np
import pytest

from serep_engine.paths import data_dir
from serep_engine.retarget.arkit import ARKIT_NAMES
from serep_engine.retarget.export import write_livelink_csv
from serep_engine.retarget.takes import TakeError, read_take

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
