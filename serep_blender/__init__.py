"""SEREP for Blender: capture an actor's facial expressions from video onto your own character mesh.

The add-on only uses bpy (and Blender's numpy); the engine (torch, mediapipe) runs in a separate process
(`python -m serep_engine worker --job JOB`), so Blender stays responsive and never imports torch.
"""

from . import capture_queue, operators, preferences, properties, tuning, ui

_modules = (preferences, properties, operators, ui, capture_queue, tuning)


def register():
    for module in _modules:
        module.register()


def unregister():
    for module in reversed(_modules):
        module.unregister()
