"""The sidebar's settings, saved with the scene (runtime job state lives in `capture_queue.py`, not in the file)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .runner import contract

MODE_ITEMS = [
    ("BASIS", "Basis", "A few SEREP_ shape keys holding the expression basis, their weights keyed per frame"),
    ("PER_FRAME", "Per Frame", "One shape key per frame, keyed on its frame: exact, heavy"),
    ("ARKIT", "ARKit", "Key the mesh's own ARKit-named shape keys (jawOpen, ...); no new keys"),
]
HEAD_ITEMS = [
    ("NONE", "None", "Expressions only"),
    ("OBJECT", "Object", "Key the head rotation on the target object"),
    ("BONE", "Bone", "Key the head rotation on a bone of an armature"),
]


def option_property(name: str):
    """The panel's property for one capture option, made from its declaration (contract.CAPTURE_OPTIONS);
    a choice's identifier is its value in capitals."""
    (option,) = [o for o in contract.CAPTURE_OPTIONS if o.name == name]
    if option.choices:
        items = [(value.upper(), value.title(), description) for value, description in option.choices]
        return EnumProperty(name=option.label, items=items, default=option.default.upper(), description=option.help)
    if option.kind is bool:
        return BoolProperty(name=option.label, default=option.default, description=option.help)
    number = IntProperty if option.kind is int else FloatProperty
    return number(name=option.label, min=option.low, max=option.high, default=option.default, description=option.help)


def capture_options(settings) -> contract.JobOptions:
    """The panel's capture options as the job's."""
    values = {o.name: getattr(settings, o.name) for o in contract.CAPTURE_OPTIONS if o.panel}
    values.update({o.name: values[o.name].lower() for o in contract.CAPTURE_OPTIONS if o.panel and o.choices})
    return contract.JobOptions(**values)


_clip_info: dict[str, tuple[float, int] | None] = {}  # clip path -> (fps, frames or a take's rows)


def is_take(path: str) -> bool:
    """Whether a clip is a Live Link Face / ARKit take (a .csv) rather than a video."""
    return path.lower().endswith(contract.TAKE_SUFFIXES)


def clip_info(path: str) -> tuple[float, int] | None:
    """(fps, frame count) of a clip read by Blender's own decoder, or (fps, rows) of a take read by the engine's
    reader (contract.read_take); None when it cannot be read. Cached per path."""
    path = bpy.path.abspath(path)
    if path not in _clip_info:
        _clip_info[path] = _take_info(path) if is_take(path) else _movie_info(path)
    return _clip_info[path]


def _movie_info(path: str) -> tuple[float, int] | None:
    try:
        clip = bpy.data.movieclips.load(path, check_existing=False)
    except RuntimeError:
        return None
    info = (clip.fps, clip.frame_duration)
    bpy.data.movieclips.remove(clip)
    return info


def _take_info(path: str) -> tuple[float, int] | None:
    try:
        take = contract.read_take(path)
    except contract.TakeError:
        return None
    return take.fps, take.n_frames


def cached_clip_info(path: str) -> tuple[float, int] | None | str:
    """For drawing (which may not add data-blocks): the cached info, or "reading" while a timer reads it."""
    key = bpy.path.abspath(path)
    if key in _clip_info:
        return _clip_info[key]
    bpy.app.timers.register(lambda: clip_info(path) and None)
    return "reading"


def _clip_changed(self, context):
    if self.clip:
        clip_info(self.clip)


def _is_mesh(self, obj) -> bool:
    return obj.type == "MESH"


def _is_armature(self, obj) -> bool:
    return obj.type == "ARMATURE"


class SerepSettings(bpy.types.PropertyGroup):
    clip: StringProperty(name="Clip", subtype="FILE_PATH", update=_clip_changed,
                         description="Video of the actor, or a Live Link Face / ARKit take (.csv)")
    frame_start: IntProperty(name="Start", min=0, default=0, description="First clip frame to capture")
    frame_end: IntProperty(name="End", min=0, default=0,
                           description="Clip frame to stop before (0: the clip's end)")
    target: PointerProperty(name="Target", type=bpy.types.Object, poll=_is_mesh,
                            description="The mesh to animate (empty: the active object)")
    mode: EnumProperty(name="Output", items=MODE_ITEMS, default="BASIS")
    smoothing: option_property("smoothing")
    gaps: option_property("gaps")
    head: EnumProperty(name="Head Rotation", items=HEAD_ITEMS, default="NONE")
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature)
    bone: StringProperty(name="Bone", description="Bone of the armature that turns the head")
    batch_directory: StringProperty(name="Folder", subtype="DIR_PATH", description="Folder of clips to batch")


def register():
    bpy.utils.register_class(SerepSettings)
    bpy.types.Scene.serep = PointerProperty(type=SerepSettings)


def unregister():
    del bpy.types.Scene.serep
    bpy.utils.unregister_class(SerepSettings)
