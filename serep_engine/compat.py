"""Stand-ins for what the engine's dependencies import and the engine never uses, so that the Blender extension
need not bundle them."""

from __future__ import annotations

import importlib.util
import sys
import types


def stand_in_for_matplotlib() -> None:
    """mediapipe 1.2.3 imports its `drawing_utils` with its vision tasks, and `drawing_utils` imports
    `matplotlib.pyplot` at module level, for plotting helpers the engine never calls. Where matplotlib is absent
    (Blender's Python with the extension's wheels), empty modules stand in for it; where it is installed, nothing
    changes."""
    if "matplotlib" in sys.modules or importlib.util.find_spec("matplotlib") is not None:
        return
    matplotlib, pyplot = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
    matplotlib.pyplot = pyplot
    sys.modules.update({"matplotlib": matplotlib, "matplotlib.pyplot": pyplot})
