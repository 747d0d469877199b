"""Retargeting onto the artist's own mesh: fitting the face template to any head mesh, carrying decoded
displacements onto its vertices, and ARKit weights for rigs with ARKit-named shape keys."""

from serep_engine.retarget.fit import LandmarkError, Registration, fit_target
from serep_engine.retarget.landmarks import NoFaceFoundError

__all__ = ["LandmarkError", "NoFaceFoundError", "Registration", "fit_target"]
