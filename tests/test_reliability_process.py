"""Reliability: process faults. The worker killed or crashing mid-run, the GPU out of memory, a full disk, the
.blend saved or closed during a capture, Blender quitting or killed with a worker running: each ends with a
plain message, no orphan process, no partial result, and the scene as it was.

Cases that need a worker busy for a while run a real capture of a real clip, so they need the capture model's
weights and skip until `serep_engine/weights/capture_model.safetensors` exists. The GPU cannot exist here:
its out-of-memory error is raised by a stand-in for the model run (said in that test)."""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from serep_engine.contract.job import Job
from serep_engine.contract.result import CaptureResult
from serep_engine.worker import Protocol, with_memory_fallback

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "real" / "videos"
CLIP = VIDEOS / "May_5s.mp4"
WEIGHTS = REPO / "serep_engine" / "weights" / "capture_model.onnx"


@pytest.fixture(scope="session")
def capture_ready():
    if not WEIGHTS.exists():
        pytest.skip("the capture model's weights are not in serep_engine/weights yet")
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {VIDEOS}")


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


class Lines:
    """A Protocol's lines, kept."""

    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.extend(json.loads(line) for line in text.splitlines())

    def flush(self):
        pass


# -- the GPU out of memory (simulated: no GPU here) ----------------------------------------------------------
def test_gpu_out_of_memory_retries_smaller_batches_then_the_cpu_and_says_so():
    """A stand-in for the model run raises torch's real CUDA out-of-memory error above 2 frames per batch on
    the GPU, and always with a flag set; the retry logic is the worker's own."""
    import torch

    calls = []

    def attempt(batch_size, device):
        calls.append((batch_size, device))
        if device == "cuda" and (batch_size > 2 or always_fails):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return f"result at {batch_size} on {device}"

    always_fails = False
    out = Lines()
    assert with_memory_fallback(attempt, 16, "cuda", Protocol(out)) == "result at 2 on cuda"
    assert calls == [(16, "cuda"), (8, "cuda"), (4, "cuda"), (2, "cuda")]
    assert [m["message"] for m in out.lines] == [f"the GPU ran out of memory: retrying {n} frames at a time"
                                                for n in (8, 4, 2)]
    always_fails, calls, out = True, [], Lines()
    assert with_memory_fallback(attempt, 4, "cuda", Protocol(out)) == "result at 1 on cpu"
    assert calls == [(4, "cuda"), (2, "cuda"), (1, "cuda"), (1, "cpu")]
    assert "running on the CPU" in out.lines[-1]["message"] and all(m["type"] == "warning" for m in out.lines)

    def cpu_fails(batch_size, device):
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        with_memory_fallback(cpu_fails, 4, "cpu", Protocol(Lines()))


# -- a full disk --------------------------------------------------------------------------------------------
@pytest.fixture
def full_disk(tmp_path):
    """A real 256 KiB filesystem (tmpfs; needs root, as in CI containers)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def big_result(frames=40, vertices=4000) -> CaptureResult:
    rng = np.random.default_rng(0)
    return CaptureResult(frames=np.arange(frames), fps=25.0, face_found=np.ones(frames, bool),
                         codes=np.zeros((frames, 8)), head_pose=np.zeros((frames, 6)),
                         basis=rng.normal(size=(8, vertices, 3)), weights=rng.normal(size=(frames, 8)))


def test_a_full_disk_keeps_the_old_file_and_leaves_no_partial_result(full_disk):
    old = full_disk / "take.npz"
    old.write_bytes(b"the user's previous result")
    with pytest.raises(OSError) as failure:
        big_result().save(old)  # about 400 KB
    assert failure.value.errno == errno.ENOSPC
    assert old.read_bytes() == b"the user's previous result"
    assert sorted(p.name for p in full_disk.iterdir()) == ["take.npz"]


def test_the_worker_says_the_disk_is_full_and_writes_nothing(capture_ready, full_disk, tmp_path):
    job = Job(clip=CLIP, output=full_disk / "result.npz", frame_end=30).save(tmp_path / "job.json")
    (full_disk / "filler").write_bytes(b"\0" * 200_000)
    run = subprocess.run([sys.executable, "-m", "serep_engine", "worker", "--job", str(job)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1 and lines[-1]["type"] == "error", run.stdout
    assert lines[-1]["message"] == f"could not write the result to {full_disk / 'result.npz'}: No space left on device"
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# -- the worker's parent gone -------------------------------------------------------------------------------
def test_a_worker_whose_parent_is_killed_does_not_stay_behind(capture_ready, tmp_path):
    """A parent starts the worker on a whole clip and is killed (kill -9, as when Blender crashes): the worker
    notices, stops, and exits within seconds instead of capturing on for nobody."""
    job = Job(clip=CLIP, output=tmp_path / "result.npz").save(tmp_path / "job.json")
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        worker = subprocess.Popen([sys.executable, "-m", "serep_engine", "worker", "--job", {str(job)!r}],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        print(worker.pid, flush=True)
        while b"tracking" not in worker.stdout.readline():
            pass
        print("tracking", flush=True)
        time.sleep(600)
    """)], cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    worker = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "tracking" and alive(worker)
    parent.kill()
    parent.wait()
    assert gone_within(worker, 15), "the worker outlived its parent"
    assert not list(tmp_path.glob("*.npz"))


# -- in Blender ---------------------------------------------------------------------------------------------
@pytest.fixture
def head(sample_head):
    """A head of its own topology with one shape key of the user's."""
    obj = sample_head(3)
    obj.shape_key_add(name="Basis", from_mix=False)
    obj.shape_key_add(name="mine", from_mix=False).value = 0.25
    return obj


def scene_state(obj) -> dict:
    import bpy

    key = obj.data.shape_keys
    co = {b.name: np.array([v.co[:] for v in b.data]) for b in key.key_blocks}
    return {"keys": co, "values": {b.name: b.value for b in key.key_blocks}, "actions": sorted(bpy.data.actions.keys()),
            "objects": sorted(bpy.data.objects.keys())}


def assert_same(before: dict, after: dict) -> None:
    assert after["actions"] == before["actions"] and after["objects"] == before["objects"]
    assert after["values"] == before["values"] and after["keys"].keys() == before["keys"].keys()
    assert all(np.array_equal(after["keys"][n], before["keys"][n]) for n in before["keys"])


def start_capture(addon, clip=CLIP):
    """A background capture as from the panel, driven by hand until the worker is tracking frames (the kept
    captures are cleared first, so that the engine runs)."""
    import bpy

    assert bpy.ops.serep.clear_kept() == {"FINISHED"}
    assert bpy.ops.serep.capture(filepath=str(clip), wait=False) == {"FINISHED"}
    queue = addon.capture_queue.ACTIVE
    deadline = time.monotonic() + 120
    while queue.run is None or queue.run.state.stage != "tracking":
        assert addon.capture_queue.tick() is not None and time.monotonic() < deadline, addon.capture_queue.LAST
        time.sleep(0.05)
    return queue


def drive_to_end(addon, seconds=300):
    deadline = time.monotonic() + seconds
    while addon.capture_queue.tick() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("signum, said", [(signal.SIGKILL, "killed by SIGKILL"),
                                          (signal.SIGSEGV, "crashed by SIGSEGV")])
@pytest.mark.slow
def test_a_worker_killed_or_crashing_mid_run_is_reported_and_changes_nothing(capture_ready, addon, head,
                                                                           signum, said):
    """kill -9 (out-of-memory killer, the user) and a native crash inside the model (SIGSEGV) mid-capture."""
    before = scene_state(head)
    queue = start_capture(addon)
    os.kill(queue.run.process.pid, signum)
    drive_to_end(addon)
    assert queue.finished and not queue.baked
    assert said in addon.capture_queue.LAST["error"] and "May_5s.mp4" in addon.capture_queue.LAST["error"]
    assert_same(before, scene_state(head))


@pytest.mark.slow
def test_saving_the_blend_during_a_capture_saves_the_scene_as_it_was(capture_ready, addon, head, tmp_path):
    import bpy

    before, name = scene_state(head), head.name
    start_capture(addon)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    drive_to_end(addon)
    assert "baked 1 clip(s)" in addon.capture_queue.LAST["summary"], addon.capture_queue.LAST
    assert any(name.startswith("SEREP_") for name in head.data.shape_keys.key_blocks.keys())
    bpy.ops.wm.open_mainfile(filepath=str(tmp_path / "scene.blend"))
    # nothing of the capture was in the scene when it was saved
    assert_same(before, scene_state(bpy.data.objects[name]))


@pytest.mark.slow
def test_closing_the_file_during_a_capture_cancels_it(capture_ready, addon, head):
    """File > New while the engine runs: the worker is ended, nothing lands in the new file (which could hold
    an object of the same name), and the panel says why."""
    import bpy

    queue = start_capture(addon)
    worker = queue.run.process.pid
    bpy.ops.wm.read_homefile(use_empty=True)
    assert queue.finished and queue.cancelled and not queue.baked and not alive(worker)
    assert "the file was closed" in addon.capture_queue.LAST["error"]
    assert not bpy.app.timers.is_registered(addon.capture_queue.tick) and bpy.ops.serep.capture.poll()
    assert not bpy.data.actions and not any(o.type == "MESH" for o in bpy.data.objects)


BLENDER_SCRIPT = """
import os, sys, time, importlib
import bpy
import numpy as np
sys.path.insert(0, {repo!r})
import serep_blender
serep_blender.register()
from serep_blender.sample import make_sample_head
from serep_engine.facemodel.ict import ICTModel
face_model = ICTModel.load()
keep = np.isin(face_model.polygon_material, [0, 1])
obj = make_sample_head(face_model.identity_neutral(face_model.identity_weights(4), face_only=False),
                       face_model.polygons[keep])
bpy.context.view_layer.objects.active = obj
bpy.ops.serep.capture(filepath={clip!r}, wait=False)
queue = serep_blender.capture_queue.ACTIVE
while queue.run is None or queue.run.state.stage != "tracking":
    assert queue.step(), serep_blender.capture_queue.LAST
    time.sleep(0.05)
print("worker", queue.run.process.pid, flush=True)
{ending}
"""


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["sys.exit(0)", "os.kill(os.getpid(), 9)"], ids=["quits", "is_killed"])
def test_blender_quitting_or_killed_with_a_worker_running_leaves_no_orphan(capture_ready, tmp_path, ending):
    """Blender (the bpy module, add-on from the checkout) quits normally, or is killed, while its worker is
    tracking a clip: the worker is gone within seconds (atexit in the add-on; the worker's parent watch)."""
    script = BLENDER_SCRIPT.format(repo=str(REPO), clip=str(CLIP), ending=ending)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "SEREP_CACHE": str(tmp_path / "cache")})
    worker = int(re.search(r"^worker (\d+)$", run.stdout, re.MULTILINE).group(1))
    assert gone_within(worker, 15), f"worker {worker} outlived Blender"
