"""Kept captures: the engine's result for a clip on a target, kept so that tuning re-bakes without the engine.

A kept result is `<folder>/<key>.npz`, key = a digest of the clip (absolute path, size, modification time), the
frame range, the target's rest shape and triangles, the output kind (ARKit weights or not) and the engine's
code and weights: change any of them and the clip is captured again. The folder is `kept/` in the cache folder (the
preferences' Cache Folder, default ~/.cache/serep), or `serep_kept/` beside the saved .blend when the panel's
Keep Captures says so. In the cache folder, results not used for KEEP_DAYS days go, then the least recently
used until the folder holds at most KEEP_BYTES; Preferences > Clear Kept Captures empties it. A folder beside
the .blend is never cleaned up by the add-on (it is the user's, like the .blend).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import bpy
import numpy as np

from .runner import engine_path

KEEP_DAYS = 30
KEEP_BYTES = 4 << 30
BESIDE_BLEND = "//serep_kept"


def folder(cache_dir: str, beside_blend: bool) -> Path:
    """Where kept results go: beside the .blend when asked and the file is saved, else the cache's kept/."""
    if beside_blend and bpy.data.filepath:
        return Path(bpy.path.abspath(BESIDE_BLEND))
    return Path(cache_dir) / "kept"


def _engine_stamp() -> list:
    """The engine's code and weights (paths, sizes, times): a new engine, or one whose capture changed with the same
    weights, captures again."""
    package = engine_path() / "serep_engine"
    return sorted([str(p.relative_to(package)), p.stat().st_size, p.stat().st_mtime_ns] for p in package.rglob("*")
                  if p.is_file() and (p.suffix == ".py" or p.parent.name == "weights"))


def key(clip: Path, start: int, end: int | None, target_npz: Path, arkit: bool, follow_landmarks: bool = True) -> str:
    """The digest that names a clip's kept result on one target (and the capture options that change it)."""
    stat = clip.stat()
    digest = hashlib.sha256(json.dumps([str(clip.resolve()), stat.st_size, stat.st_mtime_ns, start, end, arkit,
                                        follow_landmarks, _engine_stamp()]).encode())
    with np.load(target_npz) as target:
        for name in ("vertices", "faces"):
            digest.update(np.ascontiguousarray(target[name]).tobytes())
    return digest.hexdigest()[:32]


def lookup(where: Path, name: str) -> Path | None:
    """The kept result named `name`, marked as just used; None when there is none."""
    path = where / f"{name}.npz"
    if not path.is_file():
        return None
    os.utime(path)
    return path


def keep(result: Path, where: Path, name: str, prune: bool) -> Path:
    """Move a fresh result into the kept folder (then clean the folder up when it is the cache's)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"{name}.npz"
    shutil.move(str(result), str(path))
    if prune:
        prune_folder(where)
    return path


def prune_folder(where: Path, days: float = KEEP_DAYS, most_bytes: int = KEEP_BYTES) -> int:
    """Remove kept results unused for `days`, then the least recently used beyond `most_bytes`; the count."""
    files = sorted(where.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)  # newest first
    removed, total, cutoff = 0, 0, time.time() - days * 86400
    for path in files:
        stat = path.stat()
        total += stat.st_size
        if stat.st_mtime < cutoff or total > most_bytes:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def clear(where: Path) -> int:
    """Remove every kept result in `where`; the count."""
    files = list(where.glob("*.npz")) if where.is_dir() else []
    for path in files:
        path.unlink(missing_ok=True)
    return len(files)
