"""The panel's controls on kept captures: bake a kept result with them, re-bake a clip when they change, show
the change live on the frame under the playhead, find the actor's most neutral stretch.

A clip's Action remembers how it was baked (custom properties: the kept result's path, the output mode, the
head rotation target, the ARKit key names, the character's other meshes, the start frame, the controls used),
so that a re-bake needs only the panel. The character's other meshes with ARKit-named keys (teeth, tongue,
eyes, ...) get the same ARKit weights as the head, in every output mode, each in an Action of its own. While a
control moves (`changed`, the properties' update callback) the frame under the playhead is re-solved from the
kept codes: in Basis and Per Frame output its displacement goes into one preview shape key (the clip's other
SEREP keys muted meanwhile); in ARKit output the curves are re-keyed at once (52 curves are cheap). A timer
re-bakes the whole Action once the control has been still for SETTLE_S, which removes the preview key; `flush`
does it now (scripts, tests, the Re-Bake button).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import bpy
import numpy as np

from . import bake
from .properties import tuning
from .runner import contract, tune

KEPT_MARK = "serep_kept"
BAKED_MARK = "serep_baked"  # JSON: mode, head, armature, bone, arkit_keys, and the controls of the last bake
SETTLE_S = 0.3
_results: dict[str, tuple[int, bake.Result]] = {}  # kept path -> (modification time, result)
_pending: dict[str, float] = {}  # object name -> when a control last moved


def load_kept(path: str | Path) -> bake.Result:
    """A kept result, read once per file version (a few are held in memory)."""
    path = str(path)
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        raise bake.BakeError(f"the kept capture is gone ({path}): capture the clip again") from None
    if path not in _results or _results[path][0] != stamp:
        if len(_results) >= 4:
            _results.pop(next(iter(_results)))
        _results[path] = (stamp, bake.load_result(path))
    return _results[path][1]


def bake_kept(obj, kept_path: Path, clip_name: str, how: dict, controls: tune.Tuning, scene=None) -> dict:
    """Bake the kept result onto `obj` with the controls (the panel's: `properties.tuning`); `how`: mode, head,
    armature, bone, arkit_keys. The Action remembers both, for re-bakes."""
    result = load_kept(kept_path)
    try:
        tuned = tune.retune(result, controls, codes_only=how["mode"] == "ARKIT")  # ARKit keys need no basis
    except tune.TuningError as error:
        raise bake.BakeError(str(error)) from None
    armature = bpy.data.objects.get(how["armature"]) if how.get("armature") else None
    start = how.get("start_frame")
    summary = bake.bake(obj, tuned, clip_name, how["mode"], scene=scene, arkit_keys=how.get("arkit_keys", {}),
                        head=how.get("head", "NONE"), armature=armature, bone=how.get("bone", ""), start_frame=start,
                        translation_from=_translation_rest(result, controls) if how.get("head_translation") else None)
    action = bpy.data.actions[summary["action"]]
    action[KEPT_MARK] = str(kept_path)
    action[BAKED_MARK] = json.dumps({**how, "tuning": _plain(controls)})
    summary["also_keyed"] = [bake.bake(part, tuned, clip_name, "ARKIT", scene=scene, start_frame=start,
                                       arkit_keys=contract.arkit.match_arkit_names(shape_key_names(part)))["action"]
                             for part in character_parts(how.get("also_key", []))]
    return summary


def _translation_rest(result: bake.Result, controls: tune.Tuning) -> int:
    """The frame (index) the head's move is counted from: the first neutral frame when the head's rest is it."""
    if controls.head_rest == "neutral" and controls.neutral is not None:
        return int(tune.neutral_rows(result, controls.neutral)[0])
    return 0


def shape_key_names(obj) -> list[str]:
    key = obj.data.shape_keys
    return [] if key is None else [block.name for block in key.key_blocks]


def character_parts(names) -> list:
    """The character's other meshes (teeth, tongue, eyes, ...) that still exist and have ARKit-named keys."""
    parts = [bpy.data.objects.get(name) for name in names]
    return [p for p in parts if p is not None and p.type == "MESH"
            and contract.arkit.match_arkit_names(shape_key_names(p))]


def _plain(controls: tune.Tuning) -> dict:
    return {name: getattr(controls, name) for name in controls.__dataclass_fields__}


def clip_action(obj):
    """The SEREP Action playing on `obj`'s shape keys, if it was baked from a kept capture."""
    key = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    action = key.animation_data.action if key is not None and key.animation_data else None
    return action if action is not None and KEPT_MARK in action and bake.CLIP_MARK in action else None


def rebake(obj, settings, all_clips: bool = False, scene=None) -> list[dict]:
    """Re-bake the clip playing on `obj` (or every clip SEREP baked onto it from kept captures) with the panel's
    controls, without the engine."""
    _pending.pop(obj.name, None)
    if all_clips:
        actions = [a for a in bake.serep_actions(obj) if KEPT_MARK in a]
    else:
        actions = [a for a in [clip_action(obj)] if a is not None]
    if not actions:
        raise bake.BakeError(f"{obj.name} has no clip baked from a kept capture (capture it first)")
    playing = clip_action(obj)
    playing_clip = playing[bake.CLIP_MARK] if playing is not None else None
    jobs = [(a[KEPT_MARK], a[bake.CLIP_MARK], json.loads(a[BAKED_MARK])) for a in actions]
    controls = tuning(settings)
    summaries = [bake_kept(obj, kept_path, clip, {k: v for k, v in how.items() if k != "tuning"}, controls, scene)
                 for kept_path, clip, how in jobs]
    if playing_clip is not None and len(summaries) > 1:  # the clip that was playing plays again
        bake.Channels.existing(bpy.data.actions[playing_clip], obj.data.shape_keys).assign()
    return summaries


def frame_under_playhead(result: bake.Result, scene) -> int:
    """The result's frame (index) nearest the scene's current frame."""
    return int(np.argmin(np.abs(bake.scene_times(result, scene) - scene.frame_current)))


def preview(obj, settings, scene) -> str:
    """Show the panel's controls on the frame under the playhead now; returns what was done."""
    action = clip_action(obj)
    if action is None:
        return "nothing to preview"
    how = json.loads(action[BAKED_MARK])
    result = load_kept(action[KEPT_MARK])
    controls = tuning(settings)
    if how["mode"] == "ARKIT":  # the curves themselves: cheap enough to re-key on every change
        rebake(obj, settings, scene=scene)
        return "re-keyed"
    try:
        codes = tune.retune(result, controls, codes_only=True).codes
    except tune.TuningError:
        return "controls do not fit the kept capture"
    displacement = tune.frame_displacement(result, codes, frame_under_playhead(result, scene))
    tag = bake.PREFIX + bake.clip_tag(action[bake.CLIP_MARK]) + "_"
    key = obj.data.shape_keys
    name = tag + "preview"
    block = key.key_blocks.get(name)
    if block is None:
        block = obj.shape_key_add(name=name, from_mix=False)
    block.data.foreach_set("co", (bake.reference_co(obj) + displacement).ravel())
    for other in key.key_blocks:
        if other.name.startswith(tag) and other != block:
            other.mute = True
    block.value = 1.0
    obj.data.update()
    return "previewed"


def changed(context) -> None:
    """A control moved: preview it live and re-bake once it settles (Live on), else nothing until Re-Bake."""
    settings = context.scene.serep
    obj = settings.target or context.active_object
    if not settings.live or clip_action(obj) is None:
        return
    try:
        preview(obj, settings, context.scene)
    except bake.BakeError:
        return
    _pending[obj.name] = time.monotonic()
    if not bpy.app.timers.is_registered(_settle):
        bpy.app.timers.register(_settle, first_interval=SETTLE_S)


def _settle() -> float | None:
    """The timer: re-bake the objects whose controls have been still for SETTLE_S."""
    now = time.monotonic()
    due = [name for name, when in _pending.items() if now - when >= SETTLE_S]
    flush(due)
    return SETTLE_S if _pending else None


def flush(names: list[str] | None = None) -> None:
    """Re-bake now what a moving control left pending (all, or the objects named)."""
    for name in list(_pending) if names is None else names:
        _pending.pop(name, None)
        obj = bpy.data.objects.get(name)
        if obj is not None and clip_action(obj) is not None:
            try:
                rebake(obj, bpy.context.scene.serep, scene=bpy.context.scene)
            except bake.BakeError:
                pass  # the panel shows why on the next Re-Bake


def find_neutral(obj, settings, scene=None) -> tuple[int, int]:
    """The most neutral quarter second of the playing clip, set as the calibration frames (and calibration on)."""
    action = clip_action(obj)
    if action is None:
        raise bake.BakeError(f"{obj.name} has no clip baked from a kept capture (capture it first)")
    try:
        start, end = tune.find_neutral(load_kept(action[KEPT_MARK]))
    except tune.TuningError as error:
        raise bake.BakeError(str(error)) from None
    live, settings.live = settings.live, False  # one re-bake below, not one per property
    settings.neutral_start, settings.neutral_end, settings.calibrate = start, end, True
    settings.live = live
    return start, end


def register() -> None:
    """Nothing to register: the controls are properties.py's; this module holds runtime state only."""


def unregister() -> None:
    _pending.clear()
    _results.clear()
    if bpy.app.timers.is_registered(_settle):
        bpy.app.timers.unregister(_settle)
