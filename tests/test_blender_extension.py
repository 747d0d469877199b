"""The add-on installed from its extension zip into real Blender (the bpy module): registration, baking a
result file in every mode, and the background capture's error and cancel paths. End-to-end captures of real
clips (which need the capture model's weights) are at the end."""

import json
import os
import re
import subprocess
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON

ARKIT_KEYS = ["jawOpen", "eyeBlinkLeft", "mouthSmileLeft"]


@pytest.fixture
def head(sample_head):
    """A head of its own topology (decimated, in metres, Z up) with the user's own shape keys."""
    obj = sample_head(7)
    obj.shape_key_add(name="Basis", from_mix=False)
    for index, name in enumerate(["mine", *ARKIT_KEYS]):
        block = obj.shape_key_add(name=name, from_mix=False)
        co = co_of(block.data)
        co[:, 2] += 0.001 * (index + 1)
        block.data.foreach_set("co", co.ravel())
        block.value = 0.0  # Blender 5 gives a new key the value 1
    return obj


def co_of(collection) -> np.ndarray:
    co = np.empty(len(collection) * 3, np.float32)
    collection.foreach_get("co", co)
    return co.reshape(-1, 3)


def evaluated_co(obj, frame: float) -> np.ndarray:
    import bpy

    scene = bpy.context.scene
    scene.frame_set(int(frame), subframe=frame - int(frame))
    return co_of(obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.vertices)


def fake_result(n_vertices, frames=60, keys=6, fps=25.0, seed=0):
    """A result file's content made up for baking tests (the engine's real ones are tested end to end)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(scale=0.002, size=(keys, n_vertices, 3)).astype(np.float32)
    t = np.arange(frames)[:, None]
    weights = (np.sin(t * 0.2 + np.arange(keys)) * 3.0).astype(np.float32)
    head_pose = np.zeros((frames, 6), np.float32)
    head_pose[:, 1] = np.linspace(0, 0.5, frames)  # turning about the camera's y (down) axis
    head_pose[:, 5] = 60.0
    return dict(frames=np.arange(10, 10 + frames), fps=np.float64(fps), face_found=np.ones(frames, bool),
                codes=rng.normal(size=(frames, 8)).astype(np.float32), head_pose=head_pose, basis=basis,
                weights=weights, arkit_names=np.array(["jawOpen", "eyeBlinkLeft", "browInnerUp"]),
                arkit_weights=rng.uniform(size=(frames, 3)).astype(np.float32))


def user_state(obj):
    key = obj.data.shape_keys
    return {b.name: (co_of(b.data).copy(), b.value) for b in key.key_blocks if not b.name.startswith("SEREP_")}


def distribution_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundled_wheels(zip_path: Path) -> dict[str, str]:
    """{distribution: version} of the wheels in the zip's manifest."""
    with zipfile.ZipFile(zip_path) as archive:
        manifest = archive.read("blender_manifest.toml").decode()
    wheels = re.findall(r'"\./wheels/([^"]+\.whl)"', manifest)
    return {distribution_name(wheel.split("-")[0]): wheel.split("-")[1] for wheel in wheels}


def test_the_zip_is_for_this_python_and_its_blenders(extension_zip):
    """The zip for Blender 4.2-5.0 (Python 3.11) or 5.1-5.3 (3.13): only wheels that Python runs, none of torch
    or matplotlib, the Blender versions that embed that Python (blender_version_max is exclusive), under 200 MiB."""
    with zipfile.ZipFile(extension_zip) as archive:
        manifest = archive.read("blender_manifest.toml").decode()
    wheels = re.findall(r'"\./wheels/([^"]+\.whl)"', manifest)
    tags = {wheel.split("-")[-2] for wheel in wheels}  # the ABI tag
    assert tags <= {f"cp{PYTHON.replace('.', '')}", "abi3", "none"}, wheels
    assert extension_zip.name.endswith(f"-py{PYTHON.replace('.', '')}.zip")
    assert not {"torch", "matplotlib", "numpy", "opencv-contrib-python"} & set(bundled_wheels(extension_zip))
    blender = {"3.11": ('blender_version_min = "4.2.0"', 'blender_version_max = "5.1.0"'),
               "3.13": ('blender_version_min = "5.1.0"',)}[PYTHON]
    assert all(line in manifest for line in blender) and ("blender_version_max" in manifest) == (PYTHON == "3.11")
    assert extension_zip.stat().st_size <= 200 * 2**20


def test_the_extension_registers_and_unregisters_cleanly(addon, extension_zip):
    import addon_utils
    import bpy

    installed = Path(addon.__file__).parent
    assert (installed / "engine" / "serep_engine" / "weights" / "expression_model.safetensors").exists()
    assert not (installed / "serep_engine").exists() and (installed / "blender_manifest.toml").exists()
    site = Path(addon.preferences.Settings().bundled_site())
    assert site.parent.name == f"python{PYTHON}"
    installed_wheels = {distribution_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=[site])}
    assert installed_wheels == bundled_wheels(extension_zip)  # Blender installed exactly the zip's wheels
    registered = ["SEREP_PT_main", "SEREP_PT_head", "SEREP_PT_run", "SEREP_PT_batch", "SEREP_OT_capture",
                  "SEREP_OT_capture_batch", "SEREP_OT_cancel", "SEREP_OT_clear"]
    assert all(hasattr(bpy.types, name) for name in registered) and hasattr(bpy.types.Scene, "serep")
    assert "torch" not in addon.__dict__ and not any(m.startswith("torch") for m in vars(addon))

    addon_utils.disable(addon.__name__, default_set=True)
    assert not any(hasattr(bpy.types, name) for name in registered)
    assert not hasattr(bpy.types.Scene, "serep")
    addon_utils.enable(addon.__name__, default_set=True)
    assert all(hasattr(bpy.types, name) for name in registered)
    assert bpy.context.scene.serep.mode == "BASIS" and bpy.ops.serep.capture.poll()


def test_basis_bake_reproduces_every_frame_and_rebake_replaces_only_serep_data(addon, head, tmp_path):
    import bpy

    np.savez(tmp_path / "take.npz", **fake_result(len(head.data.vertices)))
    result = addon.bake.load_result(tmp_path / "take.npz")
    scene = bpy.context.scene
    scene.render.fps, scene.frame_start = 24, 1
    user_action = bpy.data.actions.new("my own action")
    head.data.shape_keys.animation_data_create().action = user_action
    before = user_state(head)

    summary = addon.bake.bake(head, result, "take", "BASIS")
    key = head.data.shape_keys
    serep_keys = [b for b in key.key_blocks if b.name.startswith("SEREP_take_")]
    assert len(serep_keys) == 6 and summary["new_keys"] == 6
    action = key.animation_data.action
    assert action.name == "take" and action["serep_clip"] == "take"
    fcurves = action.layers[0].strips[0].channelbag(key.animation_data.action_slot).fcurves
    assert len(fcurves) == 6 and all(len(fc.keyframe_points) == 60 for fc in fcurves)
    times = [p.co[0] for p in fcurves[0].keyframe_points]
    np.testing.assert_allclose(times, 1 + np.arange(60) * 24 / 25, atol=1e-4)  # 25 fps clip on a 24 fps scene
    rest = co_of(key.reference_key.data)
    for f in (0, 17, 59):
        expected = rest + np.tensordot(result.weights[f], result.basis, axes=1)
        np.testing.assert_allclose(evaluated_co(head, times[f]), expected, atol=2e-6)
    assert np.abs(evaluated_co(head, times[30]) - rest).max() > 1e-3  # the mesh moves

    addon.bake.bake(head, result, "take", "BASIS")  # re-bake: replaced, not added
    assert len([b for b in key.key_blocks if b.name.startswith("SEREP_")]) == 6
    assert len([a for a in bpy.data.actions if a.get("serep_clip") == "take"]) == 1
    assert user_action.name in bpy.data.actions and user_action.use_fake_user  # kept, safe when saving
    after = user_state(head)
    assert after.keys() == before.keys()
    assert all(np.array_equal(after[n][0], before[n][0]) and after[n][1] == before[n][1] for n in before)


def test_per_frame_bake_is_exact_on_every_frame(addon, head, tmp_path):
    np.savez(tmp_path / "take.npz", **fake_result(len(head.data.vertices), frames=20))
    result = addon.bake.load_result(tmp_path / "take.npz")
    summary = addon.bake.bake(head, result, "take", "PER_FRAME")
    key = head.data.shape_keys
    assert summary["new_keys"] == 20 and len([b for b in key.key_blocks if b.name.startswith("SEREP_")]) == 20
    rest = co_of(key.reference_key.data)
    times = addon.bake.scene_times(result, __import__("bpy").context.scene)
    for f in (0, 7, 19):
        expected = rest + np.tensordot(result.weights[f], result.basis, axes=1)
        np.testing.assert_allclose(evaluated_co(head, times[f]), expected, atol=2e-6)


def test_arkit_bake_keys_the_rigs_own_keys_and_adds_none(addon, head, tmp_path):
    np.savez(tmp_path / "take.npz", **fake_result(len(head.data.vertices)))
    result = addon.bake.load_result(tmp_path / "take.npz")
    names_before = [b.name for b in head.data.shape_keys.key_blocks]
    before = user_state(head)
    summary = addon.bake.bake(head, result, "take", "ARKIT", arkit_keys={"jawOpen": "jawOpen",
                                                                        "eyeBlinkLeft": "eyeBlinkLeft"})
    key = head.data.shape_keys
    assert summary["new_keys"] == 0 and [b.name for b in key.key_blocks] == names_before
    fcurves = key.animation_data.action.layers[0].strips[0].channelbag(key.animation_data.action_slot).fcurves
    assert sorted(fc.data_path for fc in fcurves) == ['key_blocks["eyeBlinkLeft"].value', 'key_blocks["jawOpen"].value']
    times = addon.bake.scene_times(result, __import__("bpy").context.scene)
    evaluated_co(head, times[12])
    assert key.key_blocks["jawOpen"].value == pytest.approx(result.arkit_weights[12, 0], abs=1e-5)
    assert all(np.array_equal(co_of(key.key_blocks[n].data), before[n][0]) for n in before)  # shapes untouched
    with pytest.raises(addon.bake.BakeError, match="no ARKit-named shape keys"):
        addon.bake.bake(head, result, "other", "ARKIT", arkit_keys={})


def test_head_rotation_is_keyed_on_the_object(addon, head, tmp_path):
    np.savez(tmp_path / "take.npz", **fake_result(len(head.data.vertices)))
    result = addon.bake.load_result(tmp_path / "take.npz")
    head.rotation_mode = "XYZ"
    addon.bake.bake(head, result, "take", "BASIS", head="OBJECT")
    times = addon.bake.scene_times(result, __import__("bpy").context.scene)
    evaluated_co(head, times[-1])
    # 0.5 rad about the camera's y (down) axis turns the head about Blender's -Z
    assert tuple(head.rotation_euler) == pytest.approx((0.0, 0.0, -0.5), abs=1e-4)
    assert head.animation_data.action == head.data.shape_keys.animation_data.action  # one Action, two slots


def test_head_translation_is_keyed_from_the_rest_frame(addon, head, tmp_path):
    """The head's move in the camera (cm; x right, y down, z forward) lands on the object's location in metres,
    in Blender's axes (x right, z up, -y toward the camera), counted from the rest frame, on top of where the
    object was."""
    import bpy

    arrays = fake_result(len(head.data.vertices))
    arrays["head_pose"][:, 3:] = [[2.0 * f / 59, -1.0 * f / 59, 60.0 + 5.0 * f / 59] for f in range(60)]
    np.savez(tmp_path / "take.npz", **arrays)
    result = addon.bake.load_result(tmp_path / "take.npz")
    head.location = (1.0, 2.0, 3.0)
    addon.bake.bake(head, result, "take", "BASIS", head="OBJECT", translation_from=0)
    times = addon.bake.scene_times(result, bpy.context.scene)
    evaluated_co(head, times[0])
    assert tuple(head.location) == pytest.approx((1.0, 2.0, 3.0), abs=1e-6)
    evaluated_co(head, times[-1])  # 2 cm right, 1 cm up, 5 cm away from the camera
    assert tuple(head.location) == pytest.approx((1.02, 2.05, 3.01), abs=1e-5)


def test_a_result_for_another_mesh_is_refused_before_anything_changes(addon, head, tmp_path):
    np.savez(tmp_path / "take.npz", **fake_result(100))
    names = [b.name for b in head.data.shape_keys.key_blocks]
    with pytest.raises(addon.bake.BakeError, match="100 vertices"):
        addon.bake.bake(head, addon.bake.load_result(tmp_path / "take.npz"), "take", "BASIS")
    assert [b.name for b in head.data.shape_keys.key_blocks] == names


def test_a_clip_the_engine_cannot_read_is_reported_and_changes_nothing(addon, head, tmp_path):
    import bpy

    (tmp_path / "notes.mp4").write_text("not a video")
    names = [b.name for b in head.data.shape_keys.key_blocks]
    with pytest.raises(RuntimeError, match="notes.mp4"):
        bpy.ops.serep.capture(filepath=str(tmp_path / "notes.mp4"), wait=True)
    assert [b.name for b in head.data.shape_keys.key_blocks] == names and not bpy.data.actions
    assert "notes.mp4" in addon.capture_queue.LAST["error"]


def test_cancel_stops_the_worker_and_leaves_the_mesh_untouched(addon, head, repo_root):
    """Background capture as from the panel: the operator returns at once, a timer polls the worker (driven
    by hand here, there being no event loop), Cancel ends the process."""
    import bpy

    clip = repo_root.parent / "shared" / "data" / "real" / "videos" / "May_5s.mp4"
    if not clip.exists():
        pytest.skip("real clips not found (../shared/data beside the repository)")
    names = [b.name for b in head.data.shape_keys.key_blocks]
    assert bpy.ops.serep.capture(filepath=str(clip), wait=False) == {"FINISHED"}
    queue = addon.capture_queue.ACTIVE
    assert bpy.app.timers.is_registered(addon.capture_queue.tick) and not bpy.ops.serep.capture.poll()
    deadline = time.monotonic() + 60
    while queue.run is None or queue.run.state.stage == "starting":
        assert addon.capture_queue.tick() is not None and time.monotonic() < deadline, addon.capture_queue.LAST
        time.sleep(0.05)
    assert bpy.ops.serep.cancel() == {"FINISHED"}
    while addon.capture_queue.tick() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert queue.finished and queue.cancelled and not queue.baked
    assert "cancelled" in addon.capture_queue.LAST["summary"]
    assert [b.name for b in head.data.shape_keys.key_blocks] == names and not bpy.data.actions
    bpy.app.timers.unregister(addon.capture_queue.tick)


# -- Live Link Face / ARKit takes -------------------------------------------------------------------------------
TAKES = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "arkit_takes"
RATES = (23.976, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0)


def keyframes(fcurve) -> tuple[np.ndarray, np.ndarray]:
    co = np.empty(2 * len(fcurve.keyframe_points), np.float32)
    fcurve.keyframe_points.foreach_get("co", co)
    return co[0::2], co[1::2]


def test_a_live_link_face_take_bakes_onto_the_rigs_arkit_keys(addon, head):
    """A take (.csv) as the clip, ARKit mode, through the installed extension's worker: the rig's own ARKit keys
    get the phone's values on the take's frames; the user's keys and actions stay as they were."""
    import bpy

    from serep_engine.contract import read_take
    from serep_engine.contract.arkit import ARKIT_NAMES

    path = TAKES / "apfel.csv"
    if not path.exists():
        pytest.skip(f"real ARKit takes not found at {TAKES}")
    assert addon.properties.clip_info(str(path)) == (30.0, 1926)  # what the panel shows: fps, rows
    assert addon.capture_queue.list_clips(TAKES)[0].suffix == ".csv"  # batch takes them too
    user_action = bpy.data.actions.new("my own action")
    head.animation_data_create().action = user_action
    before = user_state(head)
    bpy.context.scene.serep.smoothing = 0.0  # the phone's own values (smoothing is a bake-time control)
    assert bpy.ops.serep.capture(filepath=str(path), mode="ARKIT", wait=True, target=head.name) == {"FINISHED"}, \
        addon.capture_queue.LAST
    take = read_take(path)
    key = head.data.shape_keys
    scene = bpy.context.scene
    times = scene.frame_start + take.frames() * (scene.render.fps / scene.render.fps_base) / 30.0
    fcurves = fcurves_of(key)
    assert sorted(fc.data_path for fc in fcurves) == sorted(f'key_blocks["{n}"].value' for n in ARKIT_KEYS)
    for fcurve in fcurves:
        at, values = keyframes(fcurve)
        column = ARKIT_NAMES.index(fcurve.data_path.split('"')[1])
        np.testing.assert_allclose(at, times, atol=1e-3)
        np.testing.assert_allclose(values[take.found], np.clip(take.weights[take.found, column], 0, 1), atol=1e-6)
    assert head.animation_data.action == user_action and not any(b.name.startswith("SEREP_") for b in key.key_blocks)
    after = user_state(head)  # the shapes untouched; values too, but for the ARKit keys the take now drives
    assert after.keys() == before.keys() and all(np.array_equal(after[n][0], before[n][0]) for n in before)
    assert all(after[n][1] == before[n][1] for n in before if n not in ARKIT_KEYS)
    assert "baked 1 clip(s), 1926 frames" in addon.capture_queue.LAST["summary"]

    # a gain and an offset re-key the curves at once (Live), from the kept capture
    settings = bpy.context.scene.serep
    assert bpy.ops.serep.list_arkit_shapes() == {"FINISHED"} and len(settings.arkit_shapes) == 52
    settings.arkit_shapes["jawOpen"].gain = 2.0
    settings.arkit_shapes["eyeBlinkLeft"].offset = 0.25
    for fcurve in fcurves_of(key):
        name = fcurve.data_path.split('"')[1]
        raw = np.clip(take.weights[take.found, ARKIT_NAMES.index(name)], 0, 1)
        expected = {"jawOpen": np.clip(2 * raw, 0, 1), "eyeBlinkLeft": np.clip(raw + 0.25, 0, 1)}.get(name, raw)
        np.testing.assert_allclose(keyframes(fcurve)[1][take.found], expected, atol=1e-6)
    # the same take on the same rig again: baked from the kept capture, the engine does not run
    assert bpy.ops.serep.capture(filepath=str(path), mode="ARKIT", wait=True, target=head.name) == {"FINISHED"}
    assert "(1 from kept captures)" in addon.capture_queue.LAST["summary"]


@pytest.fixture(scope="module")
def blink_takes(tmp_path_factory):
    """For each rate, a take written by the exporter with one blink (eyeBlinkLeft 1 on one row) 40 s in, read back
    by the take reader into a result file as the engine makes it (frames at the take's own rate)."""
    from serep_engine.contract import CaptureResult, read_take
    from serep_engine.contract.arkit import ARKIT_NAMES
    from serep_engine.retarget.export import write_livelink_csv

    folder = tmp_path_factory.mktemp("blinks")
    takes = {}
    for rate in RATES:
        frames = np.arange(int(41 * rate))
        blink = int(round(40 * rate))
        weights = np.zeros((len(frames), len(ARKIT_NAMES)), np.float32)
        weights[blink, ARKIT_NAMES.index("eyeBlinkLeft")] = 1.0
        take = read_take(write_livelink_csv(folder / f"{rate}.csv", frames, rate, ARKIT_NAMES, weights))
        n = take.n_frames
        result = CaptureResult(frames=take.frames(), fps=take.fps, face_found=take.found, codes=np.zeros((n, 1)),
                               head_pose=np.zeros((n, 6)), basis=np.zeros((1, 4, 3)), weights=np.zeros((n, 1)),
                               arkit_names=np.array(ARKIT_NAMES), arkit_weights=take.weights)
        takes[rate] = (result.save(folder / f"{rate}.npz"), blink)
    return takes


@pytest.mark.parametrize("scene_rate", RATES)
@pytest.mark.parametrize("take_rate", RATES)
def test_a_blink_lands_on_its_scene_frame_at_any_pair_of_rates(addon, blink_takes, take_rate, scene_rate):
    import bpy

    path, blink = blink_takes[take_rate]
    scene = bpy.context.scene
    scene.render.fps = round(scene_rate)
    scene.render.fps_base = round(scene_rate) / scene_rate
    scene.frame_start = 1
    mesh = bpy.data.meshes.new("eye")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    obj = bpy.data.objects.new("eye", mesh)
    scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    obj.shape_key_add(name="eyeBlinkLeft")
    addon.bake.bake(obj, addon.bake.load_result(path), "blink", "ARKIT", scene=scene,
                    arkit_keys={"eyeBlinkLeft": "eyeBlinkLeft"})
    (fcurve,) = fcurves_of(obj.data.shape_keys)
    at, values = keyframes(fcurve)
    expected = 1 + blink / take_rate * scene_rate  # the blink's time in the take, on the scene's clock
    assert at[np.argmax(values)] == pytest.approx(expected, abs=0.01)
    nearest = round(expected)
    on_frames = {frame: fcurve.evaluate(frame) for frame in (nearest - 1, nearest, nearest + 1)}
    assert max(on_frames, key=on_frames.get) == nearest
    if scene_rate >= take_rate:  # a scene frame at least as fine as the take's rows always sees the blink
        assert on_frames[nearest] >= 0.5


# -- end to end: real clips through the installed extension's worker (needs the capture model's weights) ----
VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "videos"


@pytest.fixture(scope="session")
def capture_ready(repo_root):
    if not (repo_root / "serep_engine" / "weights" / "capture_model.onnx").exists():
        pytest.skip("the capture model's weights are not in serep_engine/weights yet")
    if not VIDEOS.exists():
        pytest.skip(f"real clips not found at {VIDEOS}")


def fcurves_of(id_data):
    data = id_data.animation_data
    return data.action.layers[0].strips[0].channelbag(data.action_slot).fcurves


def requirement_closure(*names: str) -> set[str]:
    """The installed distributions these need, theirs included (extras left out)."""
    found, todo = set(), list(names)
    while todo:
        name = distribution_name(todo.pop())
        if name in found:
            continue
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
        todo += [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r]
    return found


def test_a_capture_imports_the_bundled_wheels_and_nothing_else(capture_ready, addon, extension_zip, head, tmp_path):
    """What the zip bundles is what the engine imports at run time: a real capture by the worker as the add-on
    starts it (this Python, the engine and the installed wheels first on the path), but with none of this venv's
    packages beyond what Blender's own Python has (numpy and what bpy requires: `python -S`, those linked into a
    folder on the path). Its modules at the end, each
    mapped to its distribution, must be the bundled ones plus some of Blender's own. (Blender's own Python has no
    matplotlib: mediapipe's import of it meets serep_engine/compat.py's stand-in here too.)"""
    settings = addon.preferences.Settings()
    allowed = requirement_closure("bpy")
    site = tmp_path / "blender-python"
    site.mkdir()
    for name in sorted(allowed):
        distribution = metadata.distribution(name)
        for top in {Path(str(file)).parts[0] for file in distribution.files or []} - {".."}:
            if not (site / top).exists():
                (site / top).symlink_to(distribution.locate_file(top))
    addon.capture_queue.export_target(head, tmp_path / "target.npz")
    job = addon.runner.contract.Job(clip=VIDEOS / "liveportrait_d10.mp4", output=tmp_path / "result.npz",
                                    target=tmp_path / "target.npz", frame_start=0, frame_end=10)
    job.save(tmp_path / "job.json")
    script = f"""if True:
        import atexit, importlib.metadata, json, runpy, sys
        def record():
            owners = importlib.metadata.packages_distributions()
            names = {{d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}}
            engine = sys.modules["serep_engine"].__file__
            json.dump(dict(names=sorted(names), engine=engine), open({str(tmp_path / "imported.json")!r}, "w"))
        atexit.register(record)
        sys.argv = ["serep", "worker", "--job", {str(tmp_path / "job.json")!r}]
        runpy.run_module("serep_engine", run_name="__main__")
    """
    # an empty cache, as on a user's first capture: the renders that find mediapipe's points on the template and
    # the target's face (moderngl) are made, not read back from earlier tests
    env = addon.runner.worker_environment(settings.bundled_site(), str(tmp_path / "first-run-cache"))
    env["PYTHONPATH"] += os.pathsep + str(site)
    done = subprocess.run([settings.interpreter_path(), "-S", "-c", script], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and '"type": "done"' in done.stdout, done.stderr[-3000:]
    record = json.loads((tmp_path / "imported.json").read_text())
    assert Path(record["engine"]).is_relative_to(Path(addon.__file__).parent)  # the extension's engine, no other
    imported = {distribution_name(name) for name in record["names"]}
    bundled = set(bundled_wheels(extension_zip))
    assert bundled <= imported, f"bundled, never imported: {sorted(bundled - imported)}"
    assert "torch" not in imported
    assert imported - bundled <= allowed, f"imported, not bundled: {sorted(imported - bundled - allowed)}"


@pytest.mark.parametrize("mode", ["BASIS", "PER_FRAME", "ARKIT"])
def test_capture_60_frames_of_a_real_clip_in_each_mode(capture_ready, addon, head, mode):
    import bpy

    before = user_state(head)
    clip = VIDEOS / "liveportrait_d10.mp4"  # large mouth shapes
    assert bpy.ops.serep.capture(filepath=str(clip), frame_start=20, frame_end=80, mode=mode, wait=True) \
        == {"FINISHED"}, addon.capture_queue.LAST
    key = head.data.shape_keys
    serep_keys = [b.name for b in key.key_blocks if b.name.startswith("SEREP_")]
    fcurves = fcurves_of(key)
    assert key.animation_data.action.name == "liveportrait_d10"
    if mode == "BASIS":
        assert 1 <= len(serep_keys) == len(fcurves) and all(len(fc.keyframe_points) == 60 for fc in fcurves)
    elif mode == "PER_FRAME":
        assert len(serep_keys) == len(fcurves) == 60
    else:
        assert not serep_keys and {fc.data_path for fc in fcurves} <= {f'key_blocks["{n}"].value' for n in ARKIT_KEYS}
        assert len(fcurves) == 3 and all(len(fc.keyframe_points) == 60 for fc in fcurves)
    start, end = key.animation_data.action.frame_range
    from serep_engine.track.video import probe

    assert end - start == pytest.approx(59 * bpy.context.scene.render.fps / probe(clip).fps, abs=1e-3)
    shapes = np.stack([evaluated_co(head, frame) for frame in np.linspace(start, end, 8)])
    assert np.abs(shapes - shapes[0]).max() > 1e-4  # the face moves (metres: 0.1 mm)
    after = user_state(head)
    assert all(np.array_equal(after[n][0], before[n][0]) for n in before)
    assert "baked 1 clip(s), 60 frames" in addon.capture_queue.LAST["summary"]


def test_batch_of_clips_gives_one_action_each_and_skips_a_broken_one(capture_ready, addon, head, tmp_path):
    import bpy

    for name in ("liveportrait_d0.mp4", "videoretalking_5.mp4"):
        (tmp_path / name).symlink_to(VIDEOS / name)
    (tmp_path / "broken.mp4").write_text("not a video")
    assert bpy.ops.serep.capture_batch(directory=str(tmp_path), mode="BASIS", wait=True) == {"FINISHED"}
    actions = sorted(a.name for a in bpy.data.actions if a.get("serep_clip"))
    assert actions == ["liveportrait_d0", "videoretalking_5"]
    last = addon.capture_queue.LAST
    assert "broken.mp4" in last["error"] and "baked 2 clip(s)" in last["summary"]
    key = head.data.shape_keys
    for name in actions:  # each Action holds the other clip's keys at 0
        action = bpy.data.actions[name]
        paths = {fc.data_path for fc in action.layers[0].strips[0].channelbag(action.slots[0]).fcurves}
        assert {f'key_blocks["{b.name}"].value' for b in key.key_blocks if b.name.startswith("SEREP_")} <= paths


def test_tuning_rebakes_a_captured_clip_without_the_engine(capture_ready, addon, head):
    """Capture once, then strength, per-region strength and neutral calibration re-bake the Action from the kept
    capture: live on the frame under the playhead first (a preview key), the whole Action once it settles;
    the user's keys stay as they were. A changed mesh is captured again."""
    import bpy

    from serep_engine.tune import Tuning, frame_displacement, retune

    scene, settings = bpy.context.scene, bpy.context.scene.serep
    before = user_state(head)
    clip = VIDEOS / "liveportrait_d10.mp4"
    assert bpy.ops.serep.capture(filepath=str(clip), frame_start=20, frame_end=80, mode="BASIS", wait=True,
                                 target=head.name) == {"FINISHED"}, addon.capture_queue.LAST
    action = head.data.shape_keys.animation_data.action
    kept = addon.tuning.load_kept(action["serep_kept"])
    reference = co_of(head.data.shape_keys.reference_key.data)
    times = addon.bake.scene_times(kept, scene)

    def baked(row):
        return evaluated_co(head, times[row]) - reference

    codes = retune(kept, Tuning(smoothing=1.0), codes_only=True).codes  # the panel's default smoothing
    for row in (0, 30, 59):  # the bake is the kept codes decoded (to the shape-key basis' tolerance, in metres)
        np.testing.assert_allclose(baked(row), frame_displacement(kept, codes, row), atol=2e-4)
    moving = int(np.argmax([np.abs(baked(row)).max() for row in range(0, 60, 5)])) * 5

    # live: the frame under the playhead shows the change at once, in a preview key
    scene.frame_set(int(round(times[moving])))
    settings.strength = 0.0
    preview = head.data.shape_keys.key_blocks.get("SEREP_liveportrait_d10_preview")
    assert preview is not None and preview.value == 1.0
    assert np.abs(co_of(head.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.vertices) - reference).max() \
        < 1e-6
    addon.tuning.flush()  # what the timer does once the slider stops
    assert "SEREP_liveportrait_d10_preview" not in head.data.shape_keys.key_blocks
    assert max(np.abs(baked(row)).max() for row in range(0, 60, 10)) < 1e-6

    # the jaw at 0 takes most of the mouth's motion where the jaw moves most; the forehead keeps its own
    settings.strength = 1.0
    addon.tuning.flush()
    jaw_map = kept.region_maps[list(kept.region_names).index("jaw")]
    jawed = int(np.argmax(np.linalg.norm(codes[:60] @ jaw_map, axis=1)))
    full = baked(jawed)
    settings.strength_jaw = 0.0
    assert bpy.ops.serep.rebake() == {"FINISHED"}
    chin = reference[:, 2] < np.percentile(reference[:, 2], 30)  # the lower part of the head (Z up)
    assert np.linalg.norm(baked(jawed)[chin], axis=1).mean() < 0.7 * np.linalg.norm(full[chin], axis=1).mean()
    settings.strength_jaw = 1.0

    # neutral calibration, found in the clip: its frames average to the rest shape (to the shape keys' tolerance,
    # metres), each well within the uncalibrated capture's distance from it (benchmarks/bench_calibration.py)
    uncalibrated = [np.linalg.norm(baked(row), axis=1).mean() for row in range(60)]
    assert bpy.ops.serep.find_neutral() == {"FINISHED"} and settings.calibrate
    rows = np.flatnonzero((kept.frames >= settings.neutral_start) & (kept.frames < settings.neutral_end))
    assert len(rows) == round(0.25 * kept.fps)
    assert np.abs(np.mean([baked(row) for row in rows], axis=0)).max() < 1e-4
    assert max(np.linalg.norm(baked(row), axis=1).mean() for row in rows) < 0.5 * np.median(uncalibrated)
    after = user_state(head)
    assert after.keys() == before.keys() and all(np.array_equal(after[n][0], before[n][0]) for n in before)

    # the same clip on a changed mesh is captured again, not re-baked from the old mesh's capture
    assert bpy.ops.serep.capture(filepath=str(clip), frame_start=20, frame_end=80, mode="BASIS", wait=True,
                                 target=head.name) == {"FINISHED"}
    assert "from kept captures" in addon.capture_queue.LAST["summary"]
    co = co_of(head.data.shape_keys.reference_key.data)
    co[0] += 0.001
    head.data.shape_keys.reference_key.data.foreach_set("co", co.ravel())
    assert bpy.ops.serep.capture(filepath=str(clip), frame_start=20, frame_end=80, mode="BASIS", wait=True,
                                 target=head.name) == {"FINISHED"}
    assert "from kept captures" not in addon.capture_queue.LAST["summary"]


def test_a_whole_character_and_the_takes_timecode(addon, head):
    """A character's teeth (a separate mesh with its own jawOpen key, in the Character collection) get the head's
    ARKit weights in every output mode, in an Action of their own; the user's keys stay. With Start at Timecode
    the take's first row lands on the scene frame of its timecode."""
    import bpy

    from serep_engine.contract import read_take
    from serep_engine.contract.arkit import ARKIT_NAMES

    path = TAKES / "apfel.csv"
    if not path.exists():
        pytest.skip(f"real ARKit takes not found at {TAKES}")
    jaw_column = ARKIT_NAMES.index("jawOpen")
    bpy.ops.mesh.primitive_cube_add(size=0.02)
    teeth = bpy.context.object
    teeth.name = "teeth"
    teeth.shape_key_add(name="Basis", from_mix=False)
    teeth.shape_key_add(name="jawOpen", from_mix=False).value = 0.0
    character = bpy.data.collections.new("character")
    bpy.context.scene.collection.children.link(character)
    for obj in (head, teeth):
        character.objects.link(obj)
    settings = bpy.context.scene.serep
    settings.character, settings.smoothing, settings.timecode_start = character, 0.0, True
    bpy.context.view_layer.objects.active = head
    take = read_take(path)
    scene = bpy.context.scene
    start = take.start_seconds * scene.render.fps / scene.render.fps_base
    for mode in ("BASIS", "ARKIT"):
        assert bpy.ops.serep.capture(filepath=str(path), mode=mode, wait=True, target=head.name) == {"FINISHED"}, \
            addon.capture_queue.LAST
        (jaw,) = fcurves_of(teeth.data.shape_keys)
        at, values = keyframes(jaw)
        # 13:13:04 at the scene's rate; keyframe times are float32 in Blender: 1/16 frame apart at a million frames
        assert at[0] == pytest.approx(start, abs=1 / 16) and start > 1e6
        found = take.found
        np.testing.assert_allclose(values[found], np.clip(take.weights[found, jaw_column], 0, 1), atol=1e-6)
        if mode == "BASIS":
            assert any(b.name.startswith("SEREP_apfel_") for b in head.data.shape_keys.key_blocks)
        else:
            head_jaw = [fc for fc in fcurves_of(head.data.shape_keys) if "jawOpen" in fc.data_path][0]
            np.testing.assert_array_equal(keyframes(head_jaw)[1], values)
        assert not any(b.name.startswith("SEREP_") for b in teeth.data.shape_keys.key_blocks)
    # a re-bake with a jaw at half strength moves the teeth too
    settings.strength_jaw = 0.5
    assert bpy.ops.serep.rebake() == {"FINISHED"}
    (jaw,) = fcurves_of(teeth.data.shape_keys)
    np.testing.assert_allclose(keyframes(jaw)[1][take.found], 0.5 * np.clip(take.weights[take.found, jaw_column], 0, 1),
                               atol=1e-6)
