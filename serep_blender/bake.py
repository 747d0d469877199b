"""Baking a capture result (the engine's result .npz, DESIGN.md) onto a mesh: shape keys and one Action.

Everything is written in bulk (`foreach_set` on shape-key data and keyframe points), so 1000 frames on a
20k-vertex mesh bake in about a second. What SEREP creates is marked: its shape keys are named
`SEREP_<clip>_...` and its Actions carry the custom properties `serep_clip` / `serep_object`; a re-bake of
the same clip on the same object replaces exactly those, never the user's own keys or actions.

Modes
    BASIS      K shape keys holding the result's basis (scaled so that every weight lies in [-1, 1]),
               their values keyed per frame (linear): frame f shows weights[f] @ basis.
    PER_FRAME  one shape key per frame holding that frame's displacement, each keyed to 1 on its frame
               only (constant interpolation): exact, heavy.
    ARKIT      keys the mesh's existing ARKit-named shape keys with the result's ARKit weights; no new keys
               (which key is which ARKit shape comes from the engine's name matching, `arkit_keys`).
"""

from __future__ import annotations

import re
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .runner import contract

Result = contract.CaptureResult

PREFIX = "SEREP_"
CLIP_MARK = "serep_clip"
OBJECT_MARK = "serep_object"
MODES = ("BASIS", "PER_FRAME", "ARKIT")
INTERPOLATION = {"CONSTANT": 0, "LINEAR": 1}  # KeyframeInterpolation as stored (BEZT_IPO_*)
# OpenCV's camera frame (x right, y down, z forward) -> Blender's (camera on -Y looking at a -Y-facing head)
CV_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


class BakeError(ValueError):
    """A result that cannot be baked onto this object; the message says why in plain words."""


def load_result(path: str | Path) -> Result:
    """Read and check a result file with the engine's own contract (never unpickles)."""
    try:
        return Result.load(path)
    except contract.ResultFileError as error:
        raise BakeError(str(error)) from None


def scene_times(result: Result, scene, start_frame: float | None = None) -> np.ndarray:
    """Scene frames of the result's frames: the first lands on `start_frame` (default the scene's start), clip
    fps mapped to the scene's."""
    scene_fps = scene.render.fps / scene.render.fps_base
    start = scene.frame_start if start_frame is None else start_frame
    return start + (result.frames - result.frames[0]) * (scene_fps / result.fps)


def clip_tag(clip_name: str) -> str:
    """The part of SEREP key names that says which clip they belong to (shape key names hold 63 bytes)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", clip_name).strip("_")[:32] or "clip"


def serep_actions(obj) -> list:
    """The Actions SEREP baked onto this object (any clip)."""
    return [a for a in bpy.data.actions if a.get(OBJECT_MARK) == obj.name and CLIP_MARK in a]


def clear(obj, clip_name: str | None = None) -> int:
    """Remove what SEREP created on `obj` (for one clip, or all): its shape keys and Actions. Returns the
    number of shape keys removed; the user's own keys and actions are left alone."""
    prefix = PREFIX + (clip_tag(clip_name) + "_" if clip_name else "")
    removed = 0
    key = obj.data.shape_keys
    if key is not None:
        for block in [b for b in key.key_blocks if b.name.startswith(prefix)]:
            obj.shape_key_remove(block)
            removed += 1
    for action in serep_actions(obj):
        if clip_name is None or action[CLIP_MARK] == clip_name:
            bpy.data.actions.remove(action)
    return removed


class Channels:
    """The F-curves of one animated datablock in an Action: Blender 4.4+'s slotted actions (the only kind in
    5.0) or 4.2's flat ones."""

    def __init__(self, action, id_data, slot, fcurves):
        self.action, self.id_data, self.slot, self.fcurves = action, id_data, slot, fcurves

    @classmethod
    def new(cls, action, id_data) -> Channels:
        """Channels for `id_data` in `action` (a new slot where actions have slots)."""
        if not hasattr(action, "slots"):
            return cls(action, id_data, None, action.fcurves)
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        layer = action.layers[0] if len(action.layers) else action.layers.new("SEREP")
        strip = layer.strips[0] if len(layer.strips) else layer.strips.new(type="KEYFRAME")
        return cls(action, id_data, slot, strip.channelbag(slot, ensure=True).fcurves)

    @classmethod
    def existing(cls, action, id_data) -> Channels | None:
        """The channels a SEREP action already has for datablocks of `id_data`'s type, if any."""
        if not hasattr(action, "slots"):
            return cls(action, id_data, None, action.fcurves)
        slots = [s for s in action.slots if s.target_id_type == id_data.id_type]
        if not slots or not len(action.layers) or not len(action.layers[0].strips):
            return None
        return cls(action, id_data, slots[0], action.layers[0].strips[0].channelbag(slots[0], ensure=True).fcurves)

    def curve(self, data_path: str, times: np.ndarray, values: np.ndarray, interpolation: str = "LINEAR",
              index: int = 0, group: str = ""):
        if self.slot is not None:
            fcurve = self.fcurves.new(data_path, index=index, group_name=group)
        else:
            fcurve = self.fcurves.new(data_path, index=index, action_group=group)
        points = fcurve.keyframe_points
        points.add(len(times))
        co = np.empty(2 * len(times), np.float32)
        co[0::2], co[1::2] = times, values
        points.foreach_set("co", co)
        points.foreach_set("interpolation", np.full(len(times), INTERPOLATION[interpolation], np.int32))
        fcurve.update()
        return fcurve

    def assign(self) -> None:
        """Make this the datablock's active action. A user's action that was active keeps a fake user, so
        that replacing it never loses it when the file is saved."""
        data = self.id_data.animation_data or self.id_data.animation_data_create()
        previous = data.action
        if previous is not None and previous != self.action and CLIP_MARK not in previous:
            previous.use_fake_user = True
        data.action = self.action
        if self.slot is not None:
            data.action_slot = self.slot


def bake(obj, result: Result, clip_name: str, mode: str = "BASIS", scene=None, arkit_keys: dict | None = None,
         head: str = "NONE", armature=None, bone: str = "", start_frame: float | None = None,
         translation_from: int | None = None) -> dict:
    """Bake `result` onto mesh object `obj`; returns a summary. Raises BakeError (before changing anything)
    when the result does not fit the object. `translation_from`: key the head's move since that frame (index)
    too, on the object's or bone's location; None: rotation only."""
    scene = scene or bpy.context.scene
    if obj is None or obj.type != "MESH":
        raise BakeError("the target must be a mesh object")
    if mode not in MODES:
        raise BakeError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    n_vertices = len(obj.data.vertices)
    if mode != "ARKIT" and result.basis.shape[1] != n_vertices:
        raise BakeError(f"the result is for a mesh of {result.basis.shape[1]} vertices; "
                        f"{obj.name} has {n_vertices} (was the mesh edited since the capture?)")
    if mode == "ARKIT":
        arkit_pairs = _arkit_pairs(obj, result, arkit_keys or {})
    if head == "BONE" and (armature is None or armature.type != "ARMATURE" or bone not in armature.pose.bones):
        raise BakeError(f"head rotation on a bone needs an armature with the bone {bone!r}")

    clear(obj, clip_name)
    times = scene_times(result, scene, start_frame)
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    key = obj.data.shape_keys
    action = bpy.data.actions.new(clip_name)
    action[CLIP_MARK] = clip_name
    action[OBJECT_MARK] = obj.name
    channels = Channels.new(action, key)
    tag = PREFIX + clip_tag(clip_name) + "_"
    if mode == "BASIS":
        new_keys = _bake_basis(obj, result, channels, times, tag)
    elif mode == "PER_FRAME":
        new_keys = _bake_per_frame(obj, result, channels, times, tag)
    else:
        new_keys = 0
        for column, name in arkit_pairs:
            channels.curve(f'key_blocks["{_quoted(name)}"].value', times, result.arkit_weights[:, column])
    channels.assign()
    if head == "OBJECT":
        channels = _head_channels(action, obj, clip_name)
        _bake_head(channels, result, times)
        if translation_from is not None:
            _bake_head_translation(channels, result, times, scene, translation_from)
    elif head == "BONE":
        channels = _head_channels(action, armature, clip_name)
        world = armature.matrix_world.to_3x3().normalized()
        _bake_head(channels, result, times, world, armature.pose.bones[bone])
        if translation_from is not None:
            _bake_head_translation(channels, result, times, scene, translation_from, armature,
                                   armature.pose.bones[bone])
    _silence_other_clips(obj)
    action.frame_range = (float(times[0]), float(times[-1]) if len(times) > 1 else float(times[0]) + 1)
    action.use_frame_range = True
    return {"action": action.name, "mode": mode, "frames": result.n_frames, "new_keys": new_keys,
            "frame_range": [float(times[0]), float(times[-1])], "faceless_frames": int((~result.face_found).sum())}


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _add_key(obj, name: str, co: np.ndarray, slider_min: float = 0.0):
    block = obj.shape_key_add(name=name, from_mix=False)
    block.data.foreach_set("co", co.ravel())
    block.slider_min = slider_min
    block.value = 0.0
    return block


def reference_co(obj) -> np.ndarray:
    reference = obj.data.shape_keys.reference_key
    co = np.empty(len(reference.data) * 3, np.float32)
    reference.data.foreach_get("co", co)
    return co.reshape(-1, 3)


def _bake_basis(obj, result: Result, channels: Channels, times: np.ndarray, tag: str) -> int:
    reference = reference_co(obj)
    scale = np.abs(result.weights).max(axis=0)
    scale[scale == 0] = 1.0
    for k in range(len(result.basis)):
        block = _add_key(obj, f"{tag}{k:03d}", reference + result.basis[k] * scale[k], slider_min=-1.0)
        channels.curve(f'key_blocks["{_quoted(block.name)}"].value', times, result.weights[:, k] / scale[k],
                       group="SEREP")
    return len(result.basis)


def _bake_per_frame(obj, result: Result, channels: Channels, times: np.ndarray, tag: str) -> int:
    reference = reference_co(obj)
    n = result.n_frames
    for f in range(n):
        block = _add_key(obj, f"{tag}f{result.frames[f]:05d}", reference + np.tensordot(result.weights[f],
                                                                                         result.basis, axes=1))
        # 1 from its frame to the next one, 0 elsewhere (constant interpolation holds the values between keys)
        points = [(times[f - 1], 0.0)] if f > 0 else []
        points.append((times[f], 1.0))
        if f + 1 < n:
            points.append((times[f + 1], 0.0))
        at, values = np.array(points).T
        channels.curve(f'key_blocks["{_quoted(block.name)}"].value', at, values, "CONSTANT", group="SEREP")
    return n


def _arkit_pairs(obj, result: Result, arkit_keys: dict) -> list[tuple[int, str]]:
    """(column of arkit_weights, the mesh's shape key) for each of the mesh's keys that `arkit_keys`
    ({shape key: ARKit name}, from the engine's name matching) maps onto an ARKit shape of the result."""
    if result.arkit_weights is None:
        raise BakeError("the result has no ARKit weights (capture in ARKIT mode)")
    key = obj.data.shape_keys
    blocks = set() if key is None else {block.name for block in key.key_blocks}
    columns = {name: column for column, name in enumerate(result.arkit_names)}
    pairs = [(columns[arkit], name) for name, arkit in arkit_keys.items() if name in blocks and arkit in columns]
    if not pairs:
        raise BakeError(f"{obj.name} has no ARKit-named shape keys (e.g. jawOpen, eyeBlinkLeft)")
    return sorted(pairs)


def _head_channels(action, id_data, clip_name: str) -> Channels:
    """Blender 4.4+: a second slot in the clip's Action; 4.2: a second Action (one action animates one ID)."""
    if hasattr(action, "slots"):
        channels = Channels.new(action, id_data)
    else:
        head_action = bpy.data.actions.new(f"{clip_name} head")
        head_action[CLIP_MARK] = action[CLIP_MARK]
        head_action[OBJECT_MARK] = action[OBJECT_MARK]
        channels = Channels.new(head_action, id_data)
    channels.assign()
    return channels


def head_rotations(head_pose: np.ndarray) -> list[Matrix]:
    """Per-frame head rotation in Blender's axes (a head facing -Y, Z up) from OpenCV rotation vectors."""
    rotations = []
    for rvec in head_pose[:, :3]:
        angle = float(np.linalg.norm(rvec))
        r_cv = np.array(Matrix.Rotation(angle, 3, Vector(rvec / angle))) if angle > 1e-9 else np.eye(3)
        rotations.append(Matrix((CV_TO_BLENDER @ r_cv @ CV_TO_BLENDER.T).tolist()))
    return rotations


def _bake_head(channels: Channels, result: Result, times: np.ndarray, world: Matrix | None = None,
               pose_bone=None) -> None:
    """Key the rotation (in the datablock's own rotation mode) of the object, or of a pose bone."""
    target = pose_bone if pose_bone is not None else channels.id_data
    prefix = f'pose.bones["{_quoted(pose_bone.name)}"].' if pose_bone is not None else ""
    group = pose_bone.name if pose_bone is not None else "Object Transforms"
    rest = target.rotation_quaternion.to_matrix() if target.rotation_mode == "QUATERNION" else (
        target.rotation_euler.to_matrix() if target.rotation_mode != "AXIS_ANGLE" else
        Matrix.Rotation(target.rotation_axis_angle[0], 3, target.rotation_axis_angle[1:]))
    bone_rest = pose_bone.bone.matrix_local.to_3x3() if pose_bone is not None else Matrix.Identity(3)
    to_local = (world @ bone_rest).inverted() if pose_bone is not None else None
    values = []
    previous = None
    for rotation in head_rotations(result.head_pose):
        if pose_bone is None:  # the object turns about its origin, on top of its current rotation
            local = rotation @ rest
        else:  # world rotation A B P = R A B P0 for armature A, bone rest B, pose P0 -> P
            local = to_local @ rotation @ world @ bone_rest @ rest
        if target.rotation_mode == "QUATERNION":
            q = local.to_quaternion()
            if previous is not None and q.dot(previous) < 0:
                q.negate()
            previous = q
            values.append(tuple(q))
        elif target.rotation_mode == "AXIS_ANGLE":
            axis, angle = local.to_quaternion().to_axis_angle()
            values.append((angle, *axis))
        else:
            euler = local.to_euler(target.rotation_mode, *(() if previous is None else (previous,)))
            previous = euler
            values.append(tuple(euler))
    path = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(target.rotation_mode,
                                                                                         "rotation_euler")
    values = np.array(values)
    for index in range(values.shape[1]):
        channels.curve(prefix + path, times, values[:, index], index=index, group=group)


def _bake_head_translation(channels: Channels, result: Result, times: np.ndarray, scene, rest: int, armature=None,
                           pose_bone=None) -> None:
    """Key the location of the object (or pose bone): its current one plus the head's move since the result's
    frame `rest` (the camera's cm in the scene's units and Blender's axes; a bone's in its own rest axes)."""
    cm = 0.01 / scene.unit_settings.scale_length
    move = (result.head_pose[:, 3:] - result.head_pose[rest, 3:]) @ CV_TO_BLENDER.T * cm
    if pose_bone is None:
        target, prefix, group = channels.id_data, "", "Object Transforms"
    else:
        target, prefix, group = pose_bone, f'pose.bones["{_quoted(pose_bone.name)}"].', pose_bone.name
        world = armature.matrix_world
        to_local = np.array((world.to_3x3() @ pose_bone.bone.matrix_local.to_3x3()).inverted())
        move = move @ to_local.T
    start = np.array(target.location)
    for index in range(3):
        channels.curve(prefix + "location", times, start[index] + move[:, index], index=index, group=group)


def _silence_other_clips(obj) -> None:
    """Every SEREP Action of `obj` holds the other clips' SEREP keys at 0, so that switching Actions never
    leaves another clip's keys at the last value they were played at."""
    key = obj.data.shape_keys
    if key is None:
        return
    blocks = [b.name for b in key.key_blocks if b.name.startswith(PREFIX)]
    for action in serep_actions(obj):
        own = PREFIX + clip_tag(action[CLIP_MARK]) + "_"
        channels = Channels.existing(action, key)
        if channels is None:
            continue
        animated = {fc.data_path for fc in channels.fcurves}
        for name in blocks:
            path = f'key_blocks["{_quoted(name)}"].value'
            if not name.startswith(own) and path not in animated:
                channels.curve(path, np.array([action.frame_range[0]]), np.zeros(1), "CONSTANT", group="SEREP others")

