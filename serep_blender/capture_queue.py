"""The capture queue: clips -> job files -> engine worker runs -> bakes, one clip at a time.

Runtime state only (never saved into the .blend): the running queue and the last run's summary. The queue
advances from `bpy.app.timers` (Blender stays responsive) or, for scripts and `blender -b`, from a wait loop;
both call `CaptureQueue.step`. Nothing in the scene changes until a clip's result is baked, so cancelling
leaves the scene as it was. A clip already captured on this target (same clip file, frame range, mesh, output
kind and engine: `kept.py`) is not captured again: its kept result is re-baked with the panel's controls.
Opening another file (or File > New) cancels a running capture, so that a result never lands on an object of
the same name in another file; Blender quitting ends the worker (`atexit`).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from . import bake, kept, tuning
from .preferences import Settings
from .runner import WorkerRun, contract, tune, worker_environment

ACTIVE: CaptureQueue | None = None
LAST: dict = {"summary": "", "error": ""}


@dataclass
class Options:
    """What the panel asks for: the capture options of the job, and how the result is baked."""

    mode: str = "BASIS"
    capture: contract.JobOptions = field(default_factory=contract.JobOptions)
    head: str = "NONE"
    head_translation: bool = False
    armature: str = ""
    bone: str = ""
    controls: tune.Tuning = field(default_factory=tune.Tuning)  # applied at bake time (smoothing, strength, ...)
    keep_beside_blend: bool = False
    also_key: list[str] = field(default_factory=list)  # the character's other meshes with ARKit-named keys
    timecode_start: bool = False  # takes: the first row on the scene frame of its timecode


def list_clips(directory: str | Path, names: list[str] | None = None) -> list[Path]:
    directory = Path(bpy.path.abspath(str(directory)))
    if not directory.is_dir():
        raise ValueError(f"not a folder: {directory}")
    clips = [directory / n for n in names] if names else sorted(
        p for p in directory.iterdir()
        if p.suffix.lower() in contract.VIDEO_SUFFIXES + contract.TAKE_SUFFIXES and p.is_file())
    if not clips:
        raise ValueError(f"no video clips or ARKit takes in {directory}")
    return clips


def export_target(obj, path: Path) -> list[str]:
    """The mesh's rest shape (its reference shape key, else its vertices) and triangles as the engine's
    target .npz, in object space. Returns the names of its shape keys."""
    mesh = obj.data
    if not len(mesh.polygons):
        raise ValueError(f"{obj.name} has no faces (only loose vertices or edges): the engine needs a surface")
    co = np.empty(len(mesh.vertices) * 3, np.float32)
    key = mesh.shape_keys
    (key.reference_key.data if key is not None else mesh.vertices).foreach_get("co", co)
    mesh.calc_loop_triangles()
    triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    if not len(triangles):
        raise ValueError(f"{obj.name} has no faces")
    np.savez(path, vertices=co.reshape(-1, 3), faces=triangles.reshape(-1, 3))
    return [] if key is None else [block.name for block in key.key_blocks]


def check_target(obj) -> None:
    """Refuse, before anything runs, a target the bake could not write shape keys onto."""
    if obj is None:
        raise ValueError("choose a mesh object as the target")
    if obj.type != "MESH":
        raise ValueError(f"the target {obj.name!r} is a {obj.type.lower()}, not a mesh: choose a mesh object")
    for block in (obj, obj.data):
        override = block.override_library
        library = block.library or (override.reference.library if override and override.reference else None)
        if block.library is not None or override is not None:
            raise ValueError(f"{block.name!r} is linked from {library.filepath if library else 'another file'}: "
                             "make it local (Object > Relations > Make Local) to bake onto it")


class CaptureQueue:
    def __init__(self, obj, clips: list[tuple[Path, int, int | None]], options: Options, settings: Settings,
                 undo_steps: bool):
        check_target(obj)
        for clip, _, _ in clips:
            if not clip.is_file():
                raise ValueError(f"clip not found: {clip}")
        if options.mode == "ARKIT" and obj.data.shape_keys is None:
            raise ValueError(f"{obj.name} has no shape keys to key in ARKit mode")
        self.object_name, self.clips, self.options, self.settings = obj.name, clips, options, settings
        self.undo_steps = undo_steps
        self.python = settings.interpreter_path()
        jobs = Path(settings.cache_dir) / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="capture-", dir=jobs))
        self.shape_keys = export_target(obj, self.work / "target.npz")
        self.arkit_keys = contract.arkit.match_arkit_names(self.shape_keys) if options.mode == "ARKIT" else {}
        self.parts = [p.name for p in tuning.character_parts(options.also_key) if p.name != obj.name]
        self.wants_arkit = options.mode == "ARKIT" or bool(self.parts)  # the other meshes take ARKit weights
        self.kept_folder = kept.folder(settings.cache_dir, options.keep_beside_blend)
        self.reused = 0
        self.env = worker_environment(settings.bundled_site(), settings.cache_dir)
        self.index = 0
        self.run: WorkerRun | None = None
        self.baked: list[dict] = []
        self.failed: list[tuple[str, str]] = []
        self.cancelled = False
        self.finished = False

    # -- progress for the panel ----------------------------------------------------------------------------
    @property
    def clip(self) -> Path:
        return self.clips[min(self.index, len(self.clips) - 1)][0]

    def fraction(self) -> float:
        state = self.run.state if self.run else None
        within = state.done / state.total if state and state.total and state.stage == "tracking" else 0.0
        return (self.index + within) / len(self.clips)

    def status(self) -> str:
        state = self.run.state if self.run else None
        where = f"clip {self.index + 1}/{len(self.clips)} " if len(self.clips) > 1 else ""
        if state is None:
            return f"{where}starting"
        return f"{where}{state.stage} {state.done}/{state.total} frames, {state.fps:.1f} fps"

    # -- the work --------------------------------------------------------------------------------------------
    def _kept_name(self) -> str:
        clip, start, end = self.clips[self.index]
        return kept.key(clip, start, end, self.work / "target.npz", self.wants_arkit,
                        self.options.capture.follow_landmarks)

    def _start(self) -> None:
        clip, start, end = self.clips[self.index]
        job_dir = self.work / f"{self.index:04d}"
        job_dir.mkdir()
        options = contract.JobOptions(**{**vars(self.options.capture), "arkit": self.wants_arkit, "rebake": True})
        job = contract.Job(clip=clip, output=job_dir / "result.npz", target=self.work / "target.npz",
                           frame_start=start, frame_end=end, device=self.settings.device, options=options,
                           shape_keys=self.shape_keys)
        self.run = WorkerRun(self.python, job.save(job_dir / "job.json"), self.env)

    def step(self) -> bool:
        """Advance without blocking; False once every clip is baked, failed or cancelled."""
        if self.finished:
            return False
        clip = self.clip
        if self.run is None:
            kept_path = kept.lookup(self.kept_folder, self._kept_name()) if not self.cancelled else None
            if kept_path is not None:  # captured before on this target: re-baked, the engine is not started
                self.reused += 1
                self._bake(clip, kept_path, ["from the kept capture (not captured again)"])
                return self._next()
            self._start()
        state = self.run.poll()
        if not state.finished:
            return True
        if state.result is not None and not self.cancelled:
            kept_path = kept.keep(Path(state.result), self.kept_folder, self._kept_name(),
                                  prune=not self.options.keep_beside_blend)
            self._bake(clip, kept_path, state.warnings)
        elif not self.cancelled:
            self.failed.append((clip.name, state.error or "unknown error"))
        return self._next()

    def _next(self) -> bool:
        self.run = None
        self.index += 1
        if self.cancelled or self.index >= len(self.clips):
            self._finish()
            return False
        return True

    def _bake(self, clip: Path, kept_path: Path, warnings: list[str]) -> None:
        obj = bpy.data.objects.get(self.object_name)
        try:
            if obj is None:
                raise bake.BakeError(f"the target object {self.object_name!r} is gone")
            how = {"mode": self.options.mode, "head": self.options.head, "armature": self.options.armature,
                   "head_translation": self.options.head_translation,
                   "bone": self.options.bone, "arkit_keys": self.arkit_keys, "also_key": self.parts,
                   "start_frame": self._start_frame(clip)}
            summary = tuning.bake_kept(obj, kept_path, clip.stem, how, self.options.controls, bpy.context.scene)
        except bake.BakeError as error:
            self.failed.append((clip.name, str(error)))
            return
        except Exception as error:  # never leave the queue stuck in a timer; say what happened
            self.failed.append((clip.name, f"the bake failed: {type(error).__name__}: {error}"))
            return
        summary["clip"], summary["warnings"] = clip.name, list(warnings)
        self.baked.append(summary)
        if self.undo_steps and bpy.ops.ed.undo_push.poll():
            bpy.ops.ed.undo_push(message=f"SEREP bake {clip.name}")

    def _start_frame(self, clip: Path) -> float | None:
        """Where the clip's first frame lands: its timecode's scene frame for a take when asked, else the start."""
        if not (self.options.timecode_start and clip.suffix.lower() in contract.TAKE_SUFFIXES):
            return None
        scene = bpy.context.scene
        return contract.read_take(clip).start_seconds * scene.render.fps / scene.render.fps_base

    def cancel(self, reason: str = "") -> None:
        self.cancelled = True
        if reason:
            self.failed.append((self.clip.name, reason))
        if self.run is not None:
            self.run.cancel()

    def _finish(self) -> None:
        self.finished = True
        if self.run is not None:
            self.run.wait()
        parts = []
        if self.baked:
            frames = sum(s["frames"] for s in self.baked)
            parts.append(f"baked {len(self.baked)} clip(s), {frames} frames into "
                         + ", ".join(s["action"] for s in self.baked)
                         + (f" ({self.reused} from kept captures)" if self.reused else ""))
        if self.cancelled:
            parts.append("cancelled")
        LAST["summary"] = "; ".join(parts) or "nothing baked"
        LAST["error"] = "; ".join(f"{name}: {message}" for name, message in self.failed)
        if not self.failed:  # keep the job files (and the engine's log) of failed runs for a look
            shutil.rmtree(self.work, ignore_errors=True)

    def run_to_end(self, poll_seconds: float = 0.05) -> None:
        while self.step():
            time.sleep(poll_seconds)


def start(queue: CaptureQueue, wait: bool) -> CaptureQueue:
    """Run the queue to its end now (wait), or in the background from a timer."""
    global ACTIVE
    if ACTIVE is not None and not ACTIVE.finished:
        raise ValueError("a capture is already running (cancel it first)")
    ACTIVE = queue
    LAST["summary"], LAST["error"] = "", ""
    if wait:
        queue.run_to_end()
    else:
        bpy.app.timers.register(tick, first_interval=0.05)
    return queue


def tick() -> float | None:
    """The timer: advance the active queue and redraw the sidebar; None (stop) once it is finished."""
    running = ACTIVE is not None and ACTIVE.step()
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
    return 0.1 if running else None


def stop_all(reason: str = "") -> None:
    """Cancel a running capture and wait for its worker to end (the add-on is being disabled, another file is
    opened, Blender quits)."""
    if ACTIVE is not None and not ACTIVE.finished:
        ACTIVE.cancel(reason)
        ACTIVE.run_to_end()
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)


@bpy.app.handlers.persistent
def _file_closing(*args) -> None:
    stop_all("cancelled: the file was closed while the engine was running")


def _quitting() -> None:
    """atexit: Blender is quitting (its handlers no longer run); end the worker so that none is left behind."""
    if ACTIVE is not None and ACTIVE.run is not None:
        ACTIVE.run.cancel()
        ACTIVE.run.wait(5.0)


def register() -> None:
    bpy.app.handlers.load_pre.append(_file_closing)
    atexit.register(_quitting)


def unregister() -> None:
    stop_all()
    if _file_closing in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_file_closing)
    atexit.unregister(_quitting)
