"""Writing files so that a reader never sees half of one: into a temporary name beside the target, then one
rename (atomic on every platform). A killed process or a full disk leaves the old file or none, never a torn one.
Cache entries that cannot be written (a read-only or full disk) only cost the time to make them again."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` writes the file at a temporary path, which then replaces `path`; on failure it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached_array(path: Path, make: Callable[[], np.ndarray]) -> np.ndarray:
    """The array stored at `path`, else `make()` stored there; a damaged entry is made again."""
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass
    array = make()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: np.save(tmp, array))
    except OSError:
        pass
    return array
