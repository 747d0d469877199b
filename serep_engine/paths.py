"""Where the engine finds its data and keeps its caches; every path is anchored here, never to the CWD.

- data: `SEREP_DATA` if set (the extension sets it to the data it bundles), else `../shared/data` beside the
  repository (a checkout).
- cache: `SEREP_CACHE` if set (the add-on's preferences set it), else `~/.cache/serep`.
- weights: the trained models that ship inside the package.
- the mediapipe Face Landmarker bundle (Apache-2.0): in the data folder, `mediapipe/face_landmarker.task`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def data_dir() -> Path:
    if "SEREP_DATA" in os.environ:
        return Path(os.environ["SEREP_DATA"])
    return PACKAGE.parents[1] / "shared" / "data"


def cache_dir() -> Path:
    root = Path(os.environ.get("SEREP_CACHE", Path.home() / ".cache" / "serep"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def weights_dir() -> Path:
    return PACKAGE / "weights"


def mediapipe_model() -> Path:
    path = data_dir() / "mediapipe" / "face_landmarker.task"
    if not path.is_file():
        raise FileNotFoundError(f"mediapipe's Face Landmarker bundle not found at {path} (set SEREP_DATA)")
    return path
