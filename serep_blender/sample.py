"""A sample character for tests and the demo: a head of its own topology, made in Blender from a face
model's neutral (not the template's topology, units or orientation), so that baking is shown on a mesh the
engine has never seen. Not used by the add-on's UI."""

from __future__ import annotations

import bmesh
import bpy
import numpy as np
from mathutils import Matrix, Vector


def make_sample_head(vertices: np.ndarray, polygons: np.ndarray, name: str = "SampleHead",
                     ratio: float = 0.35, eyes: list[tuple[np.ndarray, float]] = ()) -> bpy.types.Object:
    """A mesh object from (V, 3) vertices in cm (y up, face towards +z) and (P, 3|4) polygons (-1 pads
    triangles), decimated to `ratio` of its faces (a new triangle topology), with optional eyeballs
    (centre, radius in cm) as separate parts; in metres, Z up and facing -Y as Blender characters do."""
    used = np.unique(polygons[polygons >= 0])
    remap = np.full(len(vertices), -1)
    remap[used] = np.arange(len(used))
    faces = [[int(remap[i]) for i in polygon if i >= 0] for polygon in polygons]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices[used].tolist(), [], faces)
    if eyes:
        bm = bmesh.new()
        bm.from_mesh(mesh)
        for centre, radius in eyes:
            bmesh.ops.create_uvsphere(bm, u_segments=16, v_segments=12, radius=radius,
                                      matrix=Matrix.Translation(Vector(centre)))
        bm.to_mesh(mesh)
        bm.free()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    decimate = obj.modifiers.new("decimate", "DECIMATE")
    decimate.ratio = ratio
    depsgraph = bpy.context.evaluated_depsgraph_get()
    new_mesh = bpy.data.meshes.new_from_object(obj.evaluated_get(depsgraph))
    obj.modifiers.remove(decimate)
    old, obj.data = obj.data, new_mesh
    bpy.data.meshes.remove(old)
    new_mesh.name = name
    # cm, y up, +z front -> m, z up, -y front (a Matrix: a plain nested list would be read column by column)
    new_mesh.transform(Matrix(((0.01, 0, 0, 0), (0, 0, -0.01, 0), (0, 0.01, 0, 0), (0, 0, 0, 1))))
    for polygon in new_mesh.polygons:
        polygon.use_smooth = True
    return obj

