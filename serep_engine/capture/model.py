"""The capture model: E_img with its heads.

Inputs per frame: the face crop (the shared similarity crop, resized to `input_size`) and, optionally,
mediapipe's 478 landmarks in crop coordinates (with a flag saying whether they are there). A small
residual CNN reads the crop, an MLP reads the landmarks; the fused feature feeds
- H_exp: the SEREP code z (D = the expression model's code size),
- H_lmks: the 68 iBUG landmarks in crop coordinates,
- C_d: a domain classifier (synthetic vs real) behind a gradient-reversal layer, used only in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from serep_engine.device import pick_device

WEIGHTS_NAME = "capture_model"
N_MEDIAPIPE = 478


@dataclass
class CaptureModelConfig:
    code_dim: int = 64
    input_size: int = 96  # the network's crop side (crops are resized to it)
    crop_size: int = 256  # the front end's crop side (landmark coordinates are in it)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    feature_dim: int = 256
    use_image: bool = True
    use_landmarks: bool = True


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by -strength backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x, strength: float):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class CaptureNet(nn.Module):
    def __init__(self, config: CaptureModelConfig):
        super().__init__()
        self.config = c = config
        width = 0
        if c.use_image:
            layers = [nn.Conv2d(3, c.widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(c.widths[0]), nn.ReLU(inplace=True)]
            cin = c.widths[0]
            for cout in c.widths:
                layers += [_Residual(cin, cout, 2), _Residual(cout, cout, 1)]
                cin = cout
            self.image_encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            width += cin
        if c.use_landmarks:
            self.landmark_encoder = nn.Sequential(
                nn.Linear(2 * N_MEDIAPIPE + 1, 512), nn.ReLU(inplace=True), nn.Linear(512, 256), nn.ReLU(inplace=True))
            width += 256
        self.fuse = nn.Sequential(nn.Linear(width, c.feature_dim), nn.ReLU(inplace=True),
                                  nn.Linear(c.feature_dim, c.feature_dim), nn.ReLU(inplace=True))
        self.expression_head = nn.Linear(c.feature_dim, c.code_dim)
        self.landmark_head = nn.Linear(c.feature_dim, 68 * 2)
        self.domain_classifier = nn.Sequential(nn.Linear(c.feature_dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 1))

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) float in [0, 1]; landmarks (B, 478, 2) in [-1, 1] crop units, NaN where absent."""
        parts = []
        if self.config.use_image:
            parts.append(self.image_encoder((images - 0.5) / 0.25))
        if self.config.use_landmarks:
            present = torch.isfinite(landmarks).flatten(1).all(1, keepdim=True)
            flat = torch.where(present, landmarks.flatten(1), torch.zeros_like(landmarks.flatten(1)))
            parts.append(self.landmark_encoder(torch.cat([flat, present.float()], 1)))
        return self.fuse(torch.cat(parts, 1))

    def forward(self, images, landmarks, domain_strength: float = 0.0):
        feature = self.features(images, landmarks)
        code = self.expression_head(feature)
        points = self.landmark_head(feature).view(-1, 68, 2)
        domain = self.domain_classifier(GradientReversal.apply(feature, domain_strength)).squeeze(1)
        return code, points, domain


def to_network_inputs(crops, crop_landmarks, config: CaptureModelConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops (crop_size, RGB) and (478, 2) crop-pixel landmarks -> the network's tensors."""
    size = config.input_size
    images = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) if c.shape[0] != size else c
                       for c in crops])
    images = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div_(255)
    points = torch.from_numpy(np.stack(crop_landmarks).astype(np.float32)).to(device)
    return images, points / (config.crop_size / 2) - 1


class CaptureModel:
    """The trained network with what running it needs: `predict` on batches of front-end crops."""

    def __init__(self, net: CaptureNet, device: torch.device, metadata: dict | None = None):
        self.net = net.to(device).eval()
        self.device = device
        self.metadata = metadata or {}

    @property
    def config(self) -> CaptureModelConfig:
        return self.net.config

    @property
    def code_dim(self) -> int:
        return self.config.code_dim

    @property
    def crop_size(self) -> int:
        return self.config.crop_size

    @torch.no_grad()
    def predict(self, crops, crop_landmarks) -> tuple[np.ndarray, np.ndarray]:
        """Crops (crop_size RGB uint8) and their (478, 2) landmarks in crop pixels (NaN if unknown) ->
        codes (B, D) and 68 landmarks (B, 68, 2) in crop pixels."""
        images, points = to_network_inputs(crops, crop_landmarks, self.config, self.device)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            code, landmarks, _ = self.net(images, points)
        landmarks = (landmarks.float() + 1) * (self.config.crop_size / 2)
        return code.float().cpu().numpy(), landmarks.cpu().numpy()

    def save(self, directory: str | Path, name: str = WEIGHTS_NAME) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, directory / f"{name}.safetensors")
        config = asdict(self.config)
        (directory / f"{name}.json").write_text(json.dumps({"config": config, **self.metadata}, indent=1))
        return directory / f"{name}.safetensors"

    @classmethod
    def load(cls, directory: str | Path, name: str = WEIGHTS_NAME, device: str | torch.device = "cpu") -> CaptureModel:
        directory = Path(directory)
        metadata = json.loads((directory / f"{name}.json").read_text())
        config = metadata.pop("config")
        config["widths"] = tuple(config["widths"])
        net = CaptureNet(CaptureModelConfig(**config))
        state = load_file(str(directory / f"{name}.safetensors"), device="cpu")
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return cls(net, torch.device(device), metadata)

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = "auto") -> CaptureModel:
        weights = resources.files("serep_engine") / "weights"
        if not (Path(str(weights)) / f"{WEIGHTS_NAME}.safetensors").exists():
            raise FileNotFoundError(f"the capture model's weights are missing from {weights}")
        return cls.load(Path(str(weights)), device=pick_device(device))
