"""What every capture backend shares without torch: the model's config, its region patches, and the crops and
landmarks turned into the network's input arrays (the torch model and the ONNX graph take the same arrays)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

WEIGHTS_NAME = "capture_model"
N_MEDIAPIPE = 478
# Region patches in crop units ([-1, 1] across the crop): mediapipe landmarks that place them, their
# average centre over the synthetic set (used when landmarks are missing), half-sizes (x, y), pixel sides.
PATCHES = {
    "mouth": {"landmarks": (61, 291, 0, 17, 13, 14), "centre": (0.0, 0.42), "half": (0.32, 0.32), "pixels": (64, 64)},
    "eyes": {"landmarks": (33, 133, 362, 263, 70, 105, 336, 334), "centre": (0.0, -0.24), "half": (0.5, 0.25),
             "pixels": (96, 48)},
}


@dataclass
class CaptureModelConfig:
    code_dim: int = 64
    input_size: int = 96  # the network's crop side (crops are resized to it)
    crop_size: int = 256  # the front end's crop side (landmark coordinates are in it)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 256
    use_image: bool = True
    use_landmarks: bool = True
    spatial_features: bool = True  # flatten the CNN's last feature map (keeps left/right) instead of averaging it
    region_patches: bool = True  # mouth and eyes patches at twice the whole crop's resolution

    @property
    def source_size(self) -> int:
        """The side crops are resized to before the network: patches need twice the whole view's pixels."""
        return 2 * self.input_size if self.region_patches else self.input_size


class ConfiguredModel:
    """What the engine reads of either capture backend's configuration (`self.config`)."""

    config: CaptureModelConfig

    @property
    def code_dim(self) -> int:
        return self.config.code_dim

    @property
    def crop_size(self) -> int:
        return self.config.crop_size


def load_config(directory: str | Path, name: str = WEIGHTS_NAME) -> tuple[CaptureModelConfig, dict]:
    """The config and the rest of the metadata saved beside a capture model's weights."""
    metadata = json.loads((Path(directory) / f"{name}.json").read_text())
    config = metadata.pop("config")
    config["widths"] = tuple(config["widths"])
    for added in ("spatial_features", "region_patches"):  # models saved before these existed had neither
        config.setdefault(added, False)
    return CaptureModelConfig(**config), metadata


def network_arrays(crops, crop_landmarks, config: CaptureModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops (crop_size, RGB) and (478, 2) crop-pixel landmarks -> images (B, 3, S, S) float32 in [0, 1] at
    `config.source_size` and landmarks (B, 478, 2) float32 in [-1, 1] crop units (NaN where unknown)."""
    size = config.source_size
    images = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) if c.shape[0] != size else c
                       for c in crops])
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    points = np.stack(crop_landmarks).astype(np.float32)
    return images, points / np.float32(config.crop_size / 2) - np.float32(1)
