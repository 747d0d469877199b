"""Reliability: nothing read from a file is trusted. Job files, result files and clips are fuzzed (hypothesis,
a bounded number of examples here; `benchmarks/fuzz_parsers.py` runs the same properties for longer): each
either parses into something valid or is refused with the parser's own error, never another exception, and
nothing in them is ever unpickled or executed."""

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from serep_engine.contract.job import Job, JobFileError
from serep_engine.contract.result import CaptureResult, ResultFileError
from serep_engine.paths import data_dir
from serep_engine.track.video import VideoError, probe, read_frames

# benchmarks/fuzz_parsers.py raises these for longer runs
EXAMPLES = int(os.environ.get("SEREP_FUZZ_EXAMPLES", 150))
VIDEO_EXAMPLES = int(os.environ.get("SEREP_FUZZ_VIDEO_EXAMPLES", 25))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLIP = data_dir() / "real" / "videos" / "May_5s.mp4"

# -- job files ------------------------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
paths = st.sampled_from(["take.mp4", "result.npz", "head.npz", ".", "", "~nobody_here/x.npz", "a\x00b.npz",
                         "x" * 5000 + ".npz", "../" * 40 + "etc/passwd", "/dev/null", "no/such/dir/r.npz"]) \
    | st.text(max_size=30)
job_fields = st.fixed_dictionaries({}, optional={
    "version": st.sampled_from([1, 1.0, 2, "1", None]) | json_values,
    "clip": paths | json_values, "output": paths | json_values, "target": paths | json_values,
    "frame_start": st.integers() | json_values, "frame_end": st.integers() | json_values,
    "device": st.sampled_from(["auto", "cpu", "cuda", "tpu"]) | json_values,
    "options": st.fixed_dictionaries({}, optional={
        "smoothing": st.floats() | json_values, "gaps": st.sampled_from(["hold", "interpolate", "skip"]),
        "tolerance_cm": st.floats(), "max_keys": st.integers() | st.none(), "arkit": json_values}) | json_values,
    "shape_keys": st.lists(st.text(max_size=8), max_size=4) | json_values,
    "extra": json_values})


@pytest.fixture
def job_folder(tmp_path):
    (tmp_path / "take.mp4").write_bytes(b"the worker probes the clip itself")
    np.savez(tmp_path / "head.npz", vertices=np.zeros((3, 3)), faces=np.zeros((1, 3), np.int32))
    return tmp_path


@FUZZ
@given(data=job_fields)
@example(data={"version": 1, "clip": "~nobody_here/take.mp4", "output": "r.npz"})  # found by the long run
@example(data={"version": 1, "clip": "x" * 5000, "output": "take.mp4"})  # a name too long for the file system (CI)
def test_fuzzed_job_fields_are_accepted_valid_or_refused_with_a_job_error(job_folder, data):
    try:
        job = Job.from_dict(data, base=job_folder)
    except JobFileError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert job.clip.is_file() and job.output.suffix == ".npz" and job.output.parent.is_dir()
    assert job.frame_start >= 0 and (job.frame_end is None or job.frame_end > job.frame_start)
    assert job.device in ("auto", "cpu", "cuda") and job.options.gaps in ("hold", "interpolate")
    assert 0 <= job.options.smoothing <= 100 and 0 <= job.options.tolerance_cm <= 10
    assert job.output.resolve() not in {job.clip.resolve(), job.target.resolve() if job.target else None}
    assert Job.from_dict(json.loads(json.dumps(job.to_dict())), base=job_folder) == job


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_job_file_bytes_are_refused_with_a_job_error(job_folder, raw):
    (job_folder / "job.json").write_bytes(raw)
    try:
        Job.load(job_folder / "job.json")
    except JobFileError:
        pass


def test_a_job_never_runs_anything_it_names(job_folder):
    """Paths are only paths: a job naming a script or a pickle as its target is refused, nothing is run."""
    (job_folder / "evil.py").write_text("open('ran', 'w').write('x')")
    for target in ("evil.py", "evil.pkl"):
        with pytest.raises(JobFileError, match="target must be an existing .npz"):
            Job.from_dict({"version": 1, "clip": "take.mp4", "output": "r.npz", "target": target}, job_folder)
    assert not (job_folder / "ran").exists()


# -- result files -----------------------------------------------------------------------------------------------
def valid_result(frames=6, keys=3, vertices=20, dim=8) -> dict:
    rng = np.random.default_rng(0)
    return dict(frames=np.arange(frames), fps=np.float64(25), face_found=np.ones(frames, bool),
                codes=rng.normal(size=(frames, dim)).astype(np.float32), head_pose=np.zeros((frames, 6), np.float32),
                basis=rng.normal(size=(keys, vertices, 3)).astype(np.float32),
                weights=rng.normal(size=(frames, keys)).astype(np.float32))


dtypes = st.sampled_from([np.int64, np.int8, np.uint16, np.float32, np.float64, np.float16, np.complex64, bool,
                          "U3", "S2", "datetime64[s]"])
arrays = st.builds(lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
                   st.lists(st.integers(0, 4), max_size=3).map(tuple), dtypes,
                   st.sampled_from([0, 1, -1, 0.5, np.nan, np.inf, 1e30, 7]))


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(list(valid_result()) + ["arkit_names", "arkit_weights",
                                                                        "landmarks2d", "codes_raw", "junk"]),
                               arrays | st.none(), max_size=4))
@example(changes={"arkit_names": np.array("0"), "arkit_weights": np.array(0.0)})  # 0-d names (found by the fuzz)
def test_fuzzed_result_arrays_load_valid_or_are_refused(tmp_path, changes):
    arrays = valid_result()
    for name, value in changes.items():
        if value is None:
            arrays.pop(name, None)
        else:
            arrays[name] = value
    np.savez(tmp_path / "r.npz", **arrays)
    try:
        result = CaptureResult.load(tmp_path / "r.npz")
    except ResultFileError as error:
        assert str(error) and "\n" not in str(error)
        return
    f = result.n_frames
    assert result.frames.dtype == np.int64 and (np.diff(result.frames) > 0).all()
    assert result.face_found.shape == (f,) and result.weights.shape == (f, len(result.basis))
    assert all(np.isfinite(a).all() for a in (result.codes, result.head_pose, result.basis, result.weights))
    result.save(tmp_path / "again.npz")
    CaptureResult.load(tmp_path / "again.npz")


@FUZZ
@given(raw=st.binary(max_size=2000), keep=st.integers(0, 4000), flips=st.lists(st.integers(0, 10**6), max_size=8))
def test_fuzzed_result_file_bytes_are_refused_or_valid(tmp_path, raw, keep, flips):
    """Random bytes, and a real result file cut short or with bytes flipped."""
    buffer = io.BytesIO()
    np.savez(buffer, **valid_result())
    real = bytearray(buffer.getvalue())
    for at in flips:
        real[at % len(real)] ^= 0xFF
    for data in (raw, bytes(real[:keep]), bytes(real)):
        (tmp_path / "r.npz").write_bytes(data)
        try:
            CaptureResult.load(tmp_path / "r.npz")
        except ResultFileError:
            pass


def test_a_pickled_result_is_refused_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path.write_text, (tmp_path / "ran", "x"))

    arrays = valid_result()
    arrays["codes"] = np.array([Boom()], dtype=object)
    np.savez(tmp_path / "r.npz", **arrays)
    with pytest.raises(ResultFileError, match="not a readable result file|codes"):
        CaptureResult.load(tmp_path / "r.npz")
    with zipfile.ZipFile(tmp_path / "p.npz", "w") as archive:  # a bare pickle where an array should be
        archive.writestr("frames.npy", pickle.dumps(Boom()))
    with pytest.raises(ResultFileError):
        CaptureResult.load(tmp_path / "p.npz")
    assert not (tmp_path / "ran").exists()


# -- the video front end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_bytes():
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    return CLIP.read_bytes()


@settings(max_examples=VIDEO_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keep=st.integers(0, 400_000), flips=st.lists(st.tuples(st.integers(0, 10**7), st.integers(1, 255)),
                                                    max_size=20), head=st.binary(max_size=64))
def test_fuzzed_clips_are_read_or_refused_with_a_video_error(tmp_path, clip_bytes, keep, flips, head):
    """A real clip cut short, with bytes flipped (index and frames), or behind junk: the reader gives frames in
    order or a VideoError; it never hangs or raises anything else."""
    data = bytearray(head + clip_bytes[:keep] if head else clip_bytes[:keep])
    for at, mask in flips:
        if data:
            data[at % len(data)] ^= mask
    path = tmp_path / "fuzz.mp4"
    path.write_bytes(bytes(data))
    try:
        info = probe(path)
        indices = [index for index, rgb in read_frames(path, 0, 12) if rgb.shape == (info.height, info.width, 3)]
    except VideoError:
        return
    assert indices == list(range(len(indices)))
