"""Add-on preferences: which Python runs the engine, on which device, and where it keeps its cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

DEVICES = {"AUTO": "auto", "GPU": "cuda", "CPU": "cpu"}


class SEREP_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    interpreter: EnumProperty(
        name="Engine Python",
        items=[("BUNDLED", "Bundled", "Blender's own Python with the wheels that ship in the extension (CPU torch)"),
               ("CUSTOM", "Custom", "A Python 3.11 of your own that has the engine's dependencies, e.g. a CUDA torch")],
        default="BUNDLED")
    python: StringProperty(name="Python", subtype="FILE_PATH",
                           description="The interpreter to run the engine with (Custom)")
    device: EnumProperty(name="Device", items=[("AUTO", "Auto", "The GPU when the engine's torch sees one"),
                                               ("GPU", "GPU", "CUDA; fails if there is none"),
                                               ("CPU", "CPU", "Always the CPU")], default="AUTO")
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH",
                              description="Engine caches and temporary job files (empty: ~/.cache/serep)")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "interpreter")
        if self.interpreter == "CUSTOM":
            layout.prop(self, "python")
        layout.prop(self, "device")
        layout.prop(self, "cache_dir")
        layout.operator("serep.clear_kept", icon="TRASH")


class Settings:
    """The preferences as plain values, with defaults where the add-on runs without being enabled
    (e.g. imported from a checkout)."""

    def __init__(self, context=None):
        context = context or bpy.context
        addon = context.preferences.addons.get(__package__)
        prefs = addon.preferences if addon is not None else None
        self.interpreter = prefs.interpreter if prefs else "BUNDLED"
        self.python = bpy.path.abspath(prefs.python) if prefs and prefs.python else ""
        self.device = DEVICES[prefs.device] if prefs else "auto"
        cache = bpy.path.abspath(prefs.cache_dir) if prefs and prefs.cache_dir else ""
        self.cache_dir = cache or os.environ.get("SEREP_CACHE") or str(Path.home() / ".cache" / "serep")

    def interpreter_path(self) -> str:
        if self.interpreter == "BUNDLED":
            return sys.executable
        if not self.python or not Path(self.python).is_file():
            raise ValueError(f"the engine Python set in the preferences does not exist: {self.python!r}")
        return self.python

    def bundled_site(self) -> str | None:
        """The site-packages Blender installed the extension's wheels into (None for a custom Python)."""
        if self.interpreter != "BUNDLED":
            return None
        site = Path(bpy.utils.user_resource("EXTENSIONS"), ".local", "lib",
                    f"python{sys.version_info.major}.{sys.version_info.minor}", "site-packages")
        return str(site) if site.is_dir() else None


register, unregister = bpy.utils.register_classes_factory((SEREP_AP_preferences,))
