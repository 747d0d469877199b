"""Headless OpenGL renderers (moderngl on EGL): the ICT head with skin, light and camera (head.py) and any mesh
(mesh.py); a base layer for synthesis, previews, correspondence and finding faces on user meshes."""
