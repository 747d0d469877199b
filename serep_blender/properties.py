"""The sidebar's settings, saved with the scene (runtime job state lives in `capture_queue.py`, not in the file)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .runner import contract, tune

MODE_ITEMS = [
    ("BASIS", "Basis", "A few SEREP_ shape keys holding the expression basis, their weights keyed per frame"),
    ("PER_FRAME", "Per Frame", "One shape key per frame, keyed on its frame: exact, heavy"),
    ("ARKIT", "ARKit", "Key the mesh's own ARKit-named shape keys (jawOpen, ...); no new keys"),
]
HEAD_REST_ITEMS = [
    ("NONE", "As Captured", "The head's rotation as the camera saw it"),
    ("FIRST", "First Frame", "Zero rotation on the clip's first frame: the turn since then"),
    ("NEUTRAL", "Neutral Frame", "Zero rotation on the first calibration (neutral) frame"),
]
HEAD_ITEMS = [
    ("NONE", "None", "Expressions only"),
    ("OBJECT", "Object", "Key the head rotation on the target object"),
    ("BONE", "Bone", "Key the head rotation on a bone of an armature"),
]


def option_property(name: str, update=None):
    """The panel's property for one capture option, made from its declaration (contract.CAPTURE_OPTIONS);
    a choice's identifier is its value in capitals."""
    (option,) = [o for o in contract.CAPTURE_OPTIONS if o.name == name]
    if option.choices:
        items = [(value.upper(), value.title(), description) for value, description in option.choices]
        return EnumProperty(name=option.label, items=items, default=option.default.upper(), description=option.help,
                            update=update)
    if option.kind is bool:
        return BoolProperty(name=option.label, default=option.default, description=option.help, update=update)
    number = IntProperty if option.kind is int else FloatProperty
    return number(name=option.label, min=option.low, max=option.high, default=option.default, description=option.help,
                  update=update)


def capture_options(settings) -> contract.JobOptions:
    """The job's capture options: the raw codes and what a re-bake needs, since smoothing and gap filling
    (the panel's) are applied at bake time from the kept result (`tuning`)."""
    return contract.JobOptions(smoothing=0.0, gaps="hold", rebake=True, follow_landmarks=settings.follow_landmarks)


def tuning(settings) -> tune.Tuning:
    """The panel's controls as the re-bake's (serep_engine.tune.Tuning)."""
    return tune.Tuning(
        smoothing=settings.smoothing, gaps=settings.gaps.lower(),
        neutral=(settings.neutral_start, settings.neutral_end) if settings.calibrate else None,
        strength=settings.strength, regions={r: getattr(settings, f"strength_{r}") for r in tune.REGIONS},
        arkit_gain={s.name: s.gain for s in settings.arkit_shapes if s.gain != 1.0},
        arkit_offset={s.name: s.offset for s in settings.arkit_shapes if s.offset != 0.0},
        head_rest=settings.head_rest.lower())


def _tuning_changed(self, context):
    from .tuning import changed  # tuning.py imports this module

    changed(context)


def _region_strength(region: str):
    return FloatProperty(name=region.title(), default=1.0, min=0.0, soft_max=2.0, max=5.0, update=_tuning_changed,
                         description=f"Multiplier of the {region}' motion (1: as captured)")


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


class SerepShapeTuning(bpy.types.PropertyGroup):
    """One ARKit shape's gain and offset (ARKit output); `name` is the ARKit name."""

    gain: FloatProperty(name="Gain", default=1.0, min=0.0, soft_max=3.0, max=10.0, update=_tuning_changed,
                        description="The shape's weight is multiplied by this")
    offset: FloatProperty(name="Offset", default=0.0, min=-1.0, max=1.0, update=_tuning_changed,
                          description="Then this is added (the result is kept in 0..1)")


class SerepSettings(bpy.types.PropertyGroup):
    clip: StringProperty(name="Clip", subtype="FILE_PATH", update=_clip_changed,
                         description="Video of the actor, or a Live Link Face / ARKit take (.csv)")
    frame_start: IntProperty(name="Start", min=0, default=0, description="First clip frame to capture")
    frame_end: IntProperty(name="End", min=0, default=0,
                           description="Clip frame to stop before (0: the clip's end)")
    target: PointerProperty(name="Target", type=bpy.types.Object, poll=_is_mesh,
                            description="The mesh to animate (empty: the active object)")
    mode: EnumProperty(name="Output", items=MODE_ITEMS, default="BASIS")
    follow_landmarks: option_property("follow_landmarks")
    smoothing: option_property("smoothing", _tuning_changed)
    gaps: option_property("gaps", _tuning_changed)
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, soft_max=2.0, max=5.0, update=_tuning_changed,
                            description="Overall strength of the expression (1: as captured)")
    strength_brows: _region_strength("brows")
    strength_eyes: _region_strength("eyes")
    strength_cheeks: _region_strength("cheeks")
    strength_mouth: _region_strength("mouth")
    strength_jaw: _region_strength("jaw")
    calibrate: BoolProperty(name="Calibrate Neutral", default=False, update=_tuning_changed,
                            description="Take the expression relative to the actor's rest face on the neutral frames")
    neutral_start: IntProperty(name="Neutral Start", min=0, default=0, update=_tuning_changed,
                               description="First clip frame where the actor is at rest")
    neutral_end: IntProperty(name="Neutral End", min=1, default=1, update=_tuning_changed,
                             description="Clip frame after the last rest frame")
    head_rest: EnumProperty(name="Head Rest", items=HEAD_REST_ITEMS, default="NONE", update=_tuning_changed)
    arkit_shapes: CollectionProperty(type=SerepShapeTuning)
    arkit_shape_index: IntProperty()
    live: BoolProperty(name="Live", default=True, description="Show the change on the current frame while a "
                       "control moves, and re-bake the Action once it stops")
    character: PointerProperty(name="Character", type=bpy.types.Collection,
                               description="Also key every mesh of this collection that has ARKit-named shape keys "
                                           "(teeth, tongue, eyes, ...) with the head's ARKit weights")
    timecode_start: BoolProperty(name="Start at Timecode", default=False,
                                 description="ARKit takes: the first row lands on the scene frame of its timecode "
                                             "(else on the scene's start)")
    keep_beside_blend: BoolProperty(name="Keep Beside .blend", default=False,
                                    description="Keep captures in serep_kept/ beside the saved .blend (else in the "
                                                "cache folder, cleaned up after 30 days unused)")
    head: EnumProperty(name="Head Rotation", items=HEAD_ITEMS, default="NONE")
    head_translation: BoolProperty(name="Translation", default=False,
                                   description="Also key the head's move (from the clip's first frame, or the rest "
                                               "frame) on the object's or the bone's location")
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature)
    bone: StringProperty(name="Bone", description="Bone of the armature that turns the head")
    batch_directory: StringProperty(name="Folder", subtype="DIR_PATH", description="Folder of clips to batch")


def register():
    bpy.utils.register_class(SerepShapeTuning)
    bpy.utils.register_class(SerepSettings)
    bpy.types.Scene.serep = PointerProperty(type=SerepSettings)


def unregister():
    del bpy.types.Scene.serep
    bpy.utils.unregister_class(SerepSettings)
    bpy.utils.unregister_class(SerepShapeTuning)
