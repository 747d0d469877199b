"""The "SEREP" tab of the 3D Viewport's sidebar: clip, target and output, then Capture / progress / Cancel, and
the controls that re-bake a captured clip without the engine (Tune)."""

from __future__ import annotations

import bpy

from . import capture_queue, tuning
from .properties import cached_clip_info, is_take
from .runner import tune


class _SidebarMixin:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "SEREP"


def _running() -> bool:
    return capture_queue.ACTIVE is not None and not capture_queue.ACTIVE.finished


class SEREP_PT_main(_SidebarMixin, bpy.types.Panel):
    bl_label = "SEREP Capture"

    def draw(self, context):
        settings = context.scene.serep
        layout = self.layout
        layout.use_property_split = True
        layout.prop(settings, "clip")
        info = cached_clip_info(settings.clip) if settings.clip else None
        if info == "reading":
            layout.label(text="reading the clip...")
        elif settings.clip and is_take(settings.clip):
            layout.label(text=f"ARKit take: {info[0]:.5g} fps, {info[1]} rows" if info else
                         "not a Live Link Face take", icon="FILE_TEXT" if info else "ERROR")
        elif settings.clip:
            layout.label(text=f"{info[0]:.3g} fps, {info[1]} frames" if info else "Blender cannot read this clip",
                         icon="FILE_MOVIE" if info else "ERROR")
        row = layout.row(align=True)
        row.prop(settings, "frame_start")
        row.prop(settings, "frame_end")
        layout.prop(settings, "target")
        layout.prop(settings, "character")
        layout.prop(settings, "mode")
        if settings.clip and is_take(settings.clip):
            layout.prop(settings, "timecode_start")
        else:
            layout.prop(settings, "follow_landmarks")


class SEREP_PT_head(_SidebarMixin, bpy.types.Panel):
    bl_label = "Head Rotation"
    bl_parent_id = "SEREP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.serep
        layout = self.layout
        layout.use_property_split = True
        layout.prop(settings, "head")
        if settings.head != "NONE":
            layout.prop(settings, "head_translation")
        if settings.head == "BONE":
            layout.prop(settings, "armature")
            if settings.armature:
                layout.prop_search(settings, "bone", settings.armature.data, "bones")


class SEREP_PT_run(_SidebarMixin, bpy.types.Panel):
    bl_label = "Run"
    bl_parent_id = "SEREP_PT_main"

    def draw(self, context):
        settings = context.scene.serep
        layout = self.layout
        prefs = context.preferences.addons.get(__package__)
        if prefs is not None:
            layout.prop(prefs.preferences, "device")
        if _running():
            queue = capture_queue.ACTIVE
            layout.progress(factor=queue.fraction(), type="BAR", text=queue.status())
            layout.operator("serep.cancel", icon="CANCEL")
            return
        take = bool(settings.clip) and is_take(settings.clip)
        op = layout.operator("serep.capture", icon="IMPORT" if take else "REC",
                             text="Import Take" if take else "Capture")
        op.filepath, op.frame_start, op.frame_end, op.mode = settings.clip, settings.frame_start, \
            settings.frame_end, settings.mode
        op.target = settings.target.name if settings.target else ""
        if capture_queue.LAST["summary"]:
            layout.label(text=capture_queue.LAST["summary"], icon="CHECKMARK")
        if capture_queue.LAST["error"]:
            layout.label(text=capture_queue.LAST["error"], icon="ERROR")
        layout.operator("serep.clear", icon="TRASH").target = settings.target.name if settings.target else ""


class SEREP_PT_batch(_SidebarMixin, bpy.types.Panel):
    bl_label = "Batch"
    bl_parent_id = "SEREP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        settings = context.scene.serep
        layout = self.layout
        layout.prop(settings, "batch_directory")
        op = layout.operator("serep.capture_batch", icon="SEQUENCE")
        op.directory, op.mode = settings.batch_directory, settings.mode
        op.target = settings.target.name if settings.target else ""


class SEREP_UL_arkit_shapes(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=item.name)
        row.prop(item, "gain", text="")
        row.prop(item, "offset", text="")


class SEREP_PT_tune(_SidebarMixin, bpy.types.Panel):
    bl_label = "Tune"
    bl_parent_id = "SEREP_PT_main"

    def draw(self, context):
        settings = context.scene.serep
        layout = self.layout
        layout.use_property_split = True
        obj = settings.target or context.active_object
        action = tuning.clip_action(obj)
        layout.label(text=f"{action[tuning.bake.CLIP_MARK]}: re-bakes from its kept capture" if action else
                     "capture a clip to tune it here", icon="CHECKMARK" if action else "INFO")
        layout.prop(settings, "smoothing")
        layout.prop(settings, "gaps")
        layout.prop(settings, "strength", slider=True)
        column = layout.column(align=True)
        for region in tune.REGIONS:
            column.prop(settings, f"strength_{region}", slider=True)
        layout.prop(settings, "calibrate")
        row = layout.row(align=True)
        row.active = settings.calibrate
        row.prop(settings, "neutral_start", text="Neutral")
        row.prop(settings, "neutral_end", text="to")
        layout.operator("serep.find_neutral", icon="VIEWZOOM")
        layout.prop(settings, "head_rest")
        if settings.mode == "ARKIT":
            layout.template_list("SEREP_UL_arkit_shapes", "", settings, "arkit_shapes", settings, "arkit_shape_index",
                                 rows=4)
            layout.operator("serep.list_arkit_shapes", icon="SHAPEKEY_DATA")
        layout.prop(settings, "live")
        layout.prop(settings, "keep_beside_blend")
        row = layout.row(align=True)
        row.operator("serep.rebake", icon="FILE_REFRESH")
        row.operator("serep.rebake", text="All Clips").all_clips = True


register, unregister = bpy.utils.register_classes_factory((SEREP_PT_main, SEREP_PT_head, SEREP_PT_run, SEREP_PT_batch,
                                                           SEREP_UL_arkit_shapes, SEREP_PT_tune))
