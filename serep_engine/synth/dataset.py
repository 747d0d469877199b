"""Synthetic training samples: SEREP codes decoded onto random identities, rendered with randomised
appearance, light, camera and background, cropped exactly as real frames are, and degraded.

Per sample: the crop (uint8), the code z, the ARKit weights it was made from, the identity weights, the
head pose (yaw, pitch, roll in degrees), and the 68 landmarks in crop pixels with their visibility.
The mesh is regenerated from (identity weights, code) with `sample_mesh`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from serep_engine.expression.model import ExpressionModel
from serep_engine.facemodel.expressions import sample_expression
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, ICTModel
from serep_engine.render.head import Appearance, Camera, HeadRenderer
from serep_engine.synth import augment
from serep_engine.track.crop import crop_face, five_points_from_68, similarity_to_crop, transform_points
from serep_engine.track.frontend import five_points_from_mediapipe

SKIN_TONES = np.array([[0.85, 0.67, 0.56], [0.75, 0.55, 0.43], [0.62, 0.45, 0.36], [0.45, 0.31, 0.24],
                       [0.30, 0.20, 0.15], [0.20, 0.13, 0.10]], np.float32)
IRIS_COLOURS = np.array([[0.25, 0.15, 0.08], [0.12, 0.07, 0.04], [0.25, 0.35, 0.5], [0.3, 0.35, 0.2]], np.float32)


@dataclass
class SynthConfig:
    crop_size: int = 256
    render_size: int = 256
    max_yaw: float = 70.0
    max_pitch: float = 30.0
    identity_scale: tuple[float, float] = (0.5, 2.5)  # per-mode std of identity weights, drawn per identity
    samples_per_identity: int = 64
    occluder_probability: float = 0.15
    track: bool = True  # run mediapipe on each finished crop (the capture model's landmark input)
    takes: tuple[str, ...] = ()  # ARKit takes (Live Link Face CSVs) whose frames give some samples' expressions
    take_share: float = 0.0  # the share of samples with a take frame's expression instead of a sampled one


class SynthGenerator:
    """Draws identities from the given seeds and renders samples of them."""

    def __init__(self, face_model: ICTModel, expression_model: ExpressionModel, config: SynthConfig | None = None,
                 backgrounds: augment.VideoBackgrounds | None = None):
        self.face_model = face_model
        self.model = expression_model
        self.config = config or SynthConfig()
        self.renderer = HeadRenderer(face_model, self.config.render_size)
        self.backgrounds = backgrounds
        self._tracker = None

    @cached_property
    def _code_of_weights(self) -> torch.Tensor:
        """(53, D): the code of each ICT shape, encoded on the generic template."""
        basis = self.model.identity_basis(self.face_model.face_neutral)
        shapes = torch.from_numpy(self.face_model.face_expression_basis)
        with torch.no_grad():
            return self.model.encode_displacements(shapes, basis)

    def code_of_weights(self, weights: np.ndarray) -> np.ndarray:
        return (torch.from_numpy(weights) @ self._code_of_weights).numpy()

    def identity(self, weights: np.ndarray) -> dict:
        """What rendering one identity needs: its full neutral head and its expression basis."""
        with torch.no_grad():
            basis = self.model.identity_basis(self.face_model.identity_neutral(weights)).numpy()
        return {"weights": weights, "neutral": self.face_model.identity_neutral(weights, face_only=False),
                "basis": basis}

    def sample_mesh(self, identity: dict, code: np.ndarray, expression_weights: np.ndarray) -> np.ndarray:
        """Full head: ICT's own deltas move the eyes, teeth and mouth interior; the face template takes the
        identity's decoded displacements."""
        mesh = identity["neutral"].copy()
        mesh[FACE_VERTEX_COUNT:] += np.tensordot(expression_weights, self._generic_rest_of_head, axes=1)
        mesh[:FACE_VERTEX_COUNT] += np.tensordot(code, identity["basis"], axes=1)
        return mesh

    @cached_property
    def _generic_rest_of_head(self) -> np.ndarray:
        return np.ascontiguousarray(self.face_model.expression_basis[:, FACE_VERTEX_COUNT:])

    def random_camera(self, rng: np.random.Generator) -> Camera:
        c = self.config
        size = c.render_size
        focal = size * rng.uniform(1.2, 4.0)
        face_fraction = rng.uniform(0.45, 0.65)
        return Camera(
            size=size, focal=focal, distance=focal * 16.0 / (face_fraction * size),
            yaw=rng.uniform(-c.max_yaw, c.max_yaw), pitch=float(np.clip(rng.normal(0, 10), -c.max_pitch, c.max_pitch)),
            roll=float(np.clip(rng.normal(0, 8), -25, 25)), offset=tuple(rng.normal(0, 1.0, 2)),
        )

    @staticmethod
    def random_appearance(rng: np.random.Generator) -> Appearance:
        tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.9, 1.1, 3)
        sh = np.zeros((9, 3), np.float32)
        sh[0] = rng.uniform(0.2, 0.6) * rng.uniform(0.85, 1.15, 3)
        sh[1:4] = rng.normal(0, 0.12, (3, 1)) * rng.uniform(0.9, 1.1, (3, 3))
        sh[4:] = rng.normal(0, 0.04, (5, 3))
        direction = rng.normal(0, 1, 3)
        direction[2] = abs(direction[2]) + 0.3
        return Appearance(
            skin=tuple(np.clip(tone, 0, 1)), iris=tuple(IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]), sh=sh,
            light_direction=tuple(direction), light_colour=tuple(rng.uniform(0.2, 0.9) * rng.uniform(0.85, 1.15, 3)),
            specular=float(rng.uniform(0.0, 0.4)), shininess=float(rng.uniform(8, 48)),
        )

    def render_sample(self, identity: dict, rng: np.random.Generator, expression_weights: np.ndarray | None = None,
                      camera: Camera | None = None, appearance: Appearance | None = None, degrade: bool = True) -> dict:
        weights = sample_expression(rng) if expression_weights is None else expression_weights
        code = self.code_of_weights(weights)
        mesh = self.sample_mesh(identity, code, weights)
        camera = camera or self.random_camera(rng)
        image, mask = self.renderer.render(mesh, camera, appearance or self.random_appearance(rng))
        landmarks, depth = camera.project(mesh[self.face_model.landmarks68])
        visible = _visible(landmarks, depth, self.renderer.depth())
        background = (self.backgrounds.sample(rng) if self.backgrounds and rng.random() < 0.7
                      else augment.procedural_background(rng, camera.size))
        image = np.where(mask[..., None], image, background)
        if degrade:
            image = augment.degrade(image, rng)
        # Crop as the capture front end does on real footage: from mediapipe's five points where it finds
        # the face, else from the true landmarks.
        tracked = self.track(image) if self.config.track else None
        found = tracked is not None and bool(np.isfinite(tracked).all())
        five = five_points_from_mediapipe(tracked) if found else five_points_from_68(landmarks)
        transform = similarity_to_crop(five, self.config.crop_size)
        crop = crop_face(image, transform, self.config.crop_size)
        crop_landmarks = transform_points(landmarks, transform)
        if degrade and rng.random() < self.config.occluder_probability:
            occluder = augment.occlude(crop, rng, crop_landmarks.mean(0), self.config.crop_size * 0.6)
            inside = np.clip(crop_landmarks.round().astype(int), 0, self.config.crop_size - 1)
            visible &= ~occluder[inside[:, 1], inside[:, 0]]
        sample = {"crop": crop, "code": code.astype(np.float32), "weights": weights.astype(np.float32),
                  "identity": identity["weights"].astype(np.float32),
                  "pose": np.array([camera.yaw, camera.pitch, camera.roll], np.float32),
                  "landmarks": crop_landmarks.astype(np.float32), "visible": visible}
        if self.config.track:
            sample["mp_landmarks"] = (transform_points(tracked[:, :2], transform) if found
                                      else np.full((len(tracked), 2), np.nan)).astype(np.float32)
        return sample

    def track(self, image: np.ndarray) -> np.ndarray:
        """mediapipe's 478 landmarks (pixels) on the finished image, NaN where it finds no face."""
        from serep_engine.track.tracking import FaceTracker

        if self._tracker is None:
            self._tracker = FaceTracker(video=False, max_faces=1)
        return self._tracker.track(image).landmarks


def _visible(pixels: np.ndarray, depth: np.ndarray, depth_image: np.ndarray, tolerance_cm: float = 0.6) -> np.ndarray:
    size = depth_image.shape[0]
    inside = (pixels >= 0).all(1) & (pixels < size - 1).all(1)
    ij = np.clip(pixels.round().astype(int), 0, size - 1)
    seen = depth_image[ij[:, 1], ij[:, 0]]
    return inside & (depth <= seen + tolerance_cm)
