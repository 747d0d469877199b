"""Operators: capture one clip, capture a folder (batch), cancel, remove what SEREP baked; re-bake with the
panel's controls, find the neutral frames, list the ARKit shapes for gains, clear the kept captures.

Scripting and headless use (DESIGN contract):
    bpy.ops.serep.capture(filepath=CLIP, frame_start=A, frame_end=B, mode='BASIS', wait=True)
    bpy.ops.serep.capture_batch(directory=DIR, wait=True)
run to completion without an event loop, on the active mesh (or the object named by `target`). Then
    scene.serep.strength_mouth = 1.5; scene.serep.calibrate = True  # ... the controls (properties.py)
    bpy.ops.serep.find_neutral(); bpy.ops.serep.rebake(all_clips=True)
re-bake from the kept captures without the engine.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty

from . import bake, capture_queue, kept, tuning
from .preferences import Settings
from .properties import MODE_ITEMS, capture_options
from .properties import tuning as panel_controls
from .runner import contract


def _target(context, name: str):
    if name:
        return bpy.data.objects.get(name)
    settings = context.scene.serep
    return settings.target or context.active_object


def _options(context, mode: str) -> capture_queue.Options:
    settings = context.scene.serep
    character = [o.name for o in settings.character.all_objects] if settings.character else []
    return capture_queue.Options(mode=mode, capture=capture_options(settings), head=settings.head,
                                 head_translation=settings.head_translation,
                                 armature=settings.armature.name if settings.armature else "", bone=settings.bone,
                                 controls=panel_controls(settings), keep_beside_blend=settings.keep_beside_blend,
                                 also_key=character,
                                 timecode_start=settings.timecode_start)


class _CaptureMixin:
    mode: EnumProperty(name="Output", items=MODE_ITEMS, default="BASIS")
    wait: BoolProperty(name="Wait", default=False, options={"SKIP_SAVE"},
                       description="Run to completion before returning (scripts, blender -b)")
    target: StringProperty(name="Target", default="", options={"SKIP_SAVE"},
                           description="Mesh object to bake onto (empty: the panel's target, else the active object)")

    @classmethod
    def poll(cls, context):
        return capture_queue.ACTIVE is None or capture_queue.ACTIVE.finished

    def _run(self, context, clips) -> set[str]:
        try:
            queue = capture_queue.CaptureQueue(_target(context, self.target), clips, _options(context, self.mode),
                                         Settings(context), undo_steps=not self.wait)
            capture_queue.start(queue, self.wait)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if not self.wait:
            self.report({"INFO"}, f"SEREP: capturing {len(clips)} clip(s) in the background")
            return {"FINISHED"}
        if capture_queue.LAST["error"]:
            self.report({"WARNING"} if queue.baked else {"ERROR"}, capture_queue.LAST["error"])
        if queue.baked:
            self.report({"INFO"}, f"SEREP: {capture_queue.LAST['summary']}")
            return {"FINISHED"}
        return {"CANCELLED"}


class SEREP_OT_capture(_CaptureMixin, bpy.types.Operator):
    """Capture the actor's expressions from a clip onto the target mesh"""

    bl_idname = "serep.capture"
    bl_label = "Capture"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Clip", subtype="FILE_PATH")
    frame_start: IntProperty(name="Start", min=0, default=0)
    frame_end: IntProperty(name="End", min=0, default=0, description="Clip frame to stop before (0: the end)")

    def execute(self, context):
        clip = Path(bpy.path.abspath(self.filepath or context.scene.serep.clip))
        if self.frame_end and self.frame_end <= self.frame_start:
            self.report({"ERROR"}, f"empty frame range [{self.frame_start}, {self.frame_end})")
            return {"CANCELLED"}
        return self._run(context, [(clip, self.frame_start, self.frame_end or None)])


class SEREP_OT_capture_batch(_CaptureMixin, bpy.types.Operator):
    """Capture every clip of a folder (or the chosen files) onto the target: one Action per clip"""

    bl_idname = "serep.capture_batch"
    bl_label = "Capture Batch"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH")
    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})

    def execute(self, context):
        try:
            clips = capture_queue.list_clips(self.directory or context.scene.serep.batch_directory,
                                       [f.name for f in self.files if f.name])
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        return self._run(context, [(clip, 0, None) for clip in clips])


class SEREP_OT_cancel(bpy.types.Operator):
    """Stop the running capture; the scene stays as it was for the clip in progress"""

    bl_idname = "serep.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return capture_queue.ACTIVE is not None and not capture_queue.ACTIVE.finished

    def execute(self, context):
        capture_queue.ACTIVE.cancel()
        return {"FINISHED"}


class SEREP_OT_clear(bpy.types.Operator):
    """Remove the shape keys and Actions SEREP created on the target (your own keys and actions stay)"""

    bl_idname = "serep.clear"
    bl_label = "Remove SEREP Animation"
    bl_options = {"REGISTER", "UNDO"}

    target: StringProperty(name="Target", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        obj = _target(context, self.target)
        try:
            capture_queue.check_target(obj)
        except ValueError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        removed = bake.clear(obj)
        self.report({"INFO"}, f"removed {removed} SEREP shape keys and their Actions from {obj.name}")
        return {"FINISHED"}


class _KeptMixin:
    target: StringProperty(name="Target", default="", options={"SKIP_SAVE"},
                           description="Mesh object (empty: the panel's target, else the active object)")

    @classmethod
    def poll(cls, context):
        return capture_queue.ACTIVE is None or capture_queue.ACTIVE.finished


class SEREP_OT_rebake(_KeptMixin, bpy.types.Operator):
    """Bake the clip again from its kept capture with the panel's controls (the engine does not run)"""

    bl_idname = "serep.rebake"
    bl_label = "Re-Bake"
    bl_options = {"REGISTER", "UNDO"}

    all_clips: BoolProperty(name="All Clips", default=False,
                            description="Every clip SEREP baked onto the target, not only the one playing")

    def execute(self, context):
        obj = _target(context, self.target)
        try:
            capture_queue.check_target(obj)
            summaries = tuning.rebake(obj, context.scene.serep, self.all_clips, context.scene)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, "re-baked " + ", ".join(s["action"] for s in summaries))
        return {"FINISHED"}


class SEREP_OT_find_neutral(_KeptMixin, bpy.types.Operator):
    """Find the actor's most neutral quarter second in the playing clip and calibrate on it"""

    bl_idname = "serep.find_neutral"
    bl_label = "Find Neutral"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        obj = _target(context, self.target)
        try:
            capture_queue.check_target(obj)
            start, end = tuning.find_neutral(obj, context.scene.serep, context.scene)
            tuning.rebake(obj, context.scene.serep, scene=context.scene)
        except (ValueError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"neutral: clip frames {start}-{end - 1}")
        return {"FINISHED"}


class SEREP_OT_list_arkit_shapes(bpy.types.Operator):
    """List the 52 ARKit shapes in the panel, each with its gain and offset (kept where already set)"""

    bl_idname = "serep.list_arkit_shapes"
    bl_label = "List ARKit Shapes"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        shapes = context.scene.serep.arkit_shapes
        present = {s.name for s in shapes}
        for name in contract.arkit.ARKIT_NAMES:
            if name not in present:
                shapes.add().name = name
        return {"FINISHED"}


class SEREP_OT_clear_kept(bpy.types.Operator):
    """Delete the kept captures in the cache folder (and beside this .blend); re-baking then captures again"""

    bl_idname = "serep.clear_kept"
    bl_label = "Clear Kept Captures"

    def execute(self, context):
        settings = Settings(context)
        folders = {kept.folder(settings.cache_dir, False), kept.folder(settings.cache_dir, True)}
        removed = sum(kept.clear(folder) for folder in folders)
        self.report({"INFO"}, f"removed {removed} kept capture(s)")
        return {"FINISHED"}


register, unregister = bpy.utils.register_classes_factory(
    (SEREP_OT_capture, SEREP_OT_capture_batch, SEREP_OT_cancel, SEREP_OT_clear, SEREP_OT_rebake,
     SEREP_OT_find_neutral, SEREP_OT_list_arkit_shapes, SEREP_OT_clear_kept))
