import json

import pytest

from serep_engine.contract.job import Job, JobFileError


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "take.mp4"
    path.write_bytes(b"not checked here: the worker probes the clip")
    return path


def write(tmp_path, **fields):
    data = {"version": 1, "clip": "take.mp4", "output": "result.npz", **fields}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_a_job_round_trips_and_resolves_relative_paths(tmp_path, clip):
    (tmp_path / "head.npz").write_bytes(b"")
    job = Job.load(write(tmp_path, target="head.npz", frame_start=5, frame_end=65, device="cpu",
                         options={"smoothing": 0.5, "arkit": True, "max_keys": 8}, shape_keys=["Basis", "jawOpen"]))
    assert job.clip == clip and job.target == tmp_path / "head.npz" and job.output == tmp_path / "result.npz"
    assert (job.frame_start, job.frame_end, job.device) == (5, 65, "cpu")
    assert job.options.smoothing == 0.5 and job.options.arkit and job.options.max_keys == 8
    assert job.options.gaps == "hold"  # the default of an option the file leaves out
    again = Job.load(job.save(tmp_path / "again.json"))
    assert again == job


@pytest.mark.parametrize("fields, message", [
    ({"clip": "missing.mp4"}, "clip not found"),
    ({"clip": "."}, "not a file"),
    ({"target": "head.obj"}, "target must be an existing .npz"),
    ({"output": "result.json"}, "output must be an .npz"),
    ({"output": "no/such/folder/result.npz"}, "output folder does not exist"),
    ({"output": "take.mp4"}, "output must be an .npz"),
    ({"frame_start": 10, "frame_end": 10}, "empty or negative frame range"),
    ({"frame_start": -1}, "empty or negative frame range"),
    ({"frame_start": 1.5}, "must be an integer"),
    ({"frame_end": True}, "must be an integer"),
    ({"device": "tpu"}, "device must be one of"),
    ({"options": {"smoothing": "lots"}}, "options.smoothing"),
    ({"options": {"gaps": "skip"}}, "options.gaps"),
    ({"options": {"max_keys": 0}}, "max_keys"),
    ({"options": {"smooth": 1.0}}, "unknown job options: smooth"),
    ({"clip_path": "take.mp4"}, "unknown job fields: clip_path"),
    ({"version": 2}, "job version"),
    ({"shape_keys": "Basis"}, "shape_keys"),
    ({"target": "head.npz", "output": "head.npz"}, "overwrite an input"),
])
def test_bad_jobs_are_refused_with_a_reason(tmp_path, clip, fields, message):
    (tmp_path / "head.npz").write_bytes(b"")
    with pytest.raises(JobFileError, match=message):
        Job.load(write(tmp_path, **fields))


def test_unreadable_job_files(tmp_path):
    with pytest.raises(JobFileError, match="not found"):
        Job.load(tmp_path / "missing.json")
    (tmp_path / "job.json").write_text("{not json")
    with pytest.raises(JobFileError, match="not a readable JSON"):
        Job.load(tmp_path / "job.json")
    (tmp_path / "job.json").write_text("[1, 2]")
    with pytest.raises(JobFileError, match="one JSON object"):
        Job.load(tmp_path / "job.json")
