"""The capture model: E_img with its heads.

Inputs per frame: the face crop (the shared similarity crop) and, optionally, mediapipe's 478 landmarks in
crop coordinates (with a flag saying whether they are there). Small residual CNNs read the whole crop at
`input_size` and, with `region_patches`, two patches cut at twice that resolution around the mouth and
the eyes and brows (placed by the landmarks; at their average place when there are none): in the whole
crop a mouth is only ~16 px wide. An MLP reads the landmarks; the fused feature feeds
- H_exp: the SEREP code z (D = the expression model's code size),
- H_lmks: the 68 iBUG landmarks in crop coordinates,
- C_d: a domain classifier (synthetic vs real) behind a gradient-reversal layer, used only in training.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from serep_engine.capture.inputs import (N_MEDIAPIPE, PATCHES, WEIGHTS_NAME, CaptureModelConfig, ConfiguredModel,
                                         load_config, network_arrays)
from serep_engine.capture.mirror import mirror_points
from serep_engine.device import pick_device


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


def _image_encoder(widths: tuple[int, ...], pixels: tuple[int, int], spatial: bool) -> tuple[nn.Module, int]:
    """A residual CNN (stride 2 stem, then a stride-2 stage per width) and its output width."""
    layers = [nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
    cin = widths[0]
    for cout in widths:
        layers += [_Residual(cin, cout, 2), _Residual(cout, cout, 1)]
        cin = cout
    if not spatial:
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), cin
    shrink = 2 ** (len(widths) + 1)
    return nn.Sequential(*layers, nn.Flatten()), cin * -(-pixels[0] // shrink) * -(-pixels[1] // shrink)


def cut_patch(images: torch.Tensor, landmarks: torch.Tensor, patch: dict) -> torch.Tensor:
    """(B, 3, H, W) crops -> (B, 3, h, w) patches around the patch's landmarks (its average centre where
    landmarks are missing)."""
    default = torch.tensor(patch["centre"], dtype=images.dtype, device=images.device)
    centre = landmarks[:, list(patch["landmarks"])].mean(1)
    centre = torch.where(torch.isfinite(centre).all(1, keepdim=True), centre, default)
    half = torch.tensor(patch["half"], dtype=images.dtype, device=images.device)
    width, height = patch["pixels"]
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=images.device, dtype=images.dtype)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=images.device, dtype=images.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2) as (x, y)
    grid = centre[:, None, None] + grid[None] * half
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class CaptureNet(nn.Module):
    def __init__(self, config: CaptureModelConfig):
        super().__init__()
        self.config = c = config
        width = 0
        if c.use_image:
            self.image_encoder, added = _image_encoder(c.widths, (c.input_size, c.input_size), c.spatial_features)
            width += added
            if c.region_patches:
                self.patch_encoders = nn.ModuleDict()
                for name, patch in PATCHES.items():
                    self.patch_encoders[name], added = _image_encoder(c.widths, patch["pixels"], c.spatial_features)
                    width += added
        if c.use_landmarks:
            self.landmark_encoder = nn.Sequential(
                nn.Linear(2 * N_MEDIAPIPE + 1, 512), nn.ReLU(inplace=True), nn.Linear(512, 256), nn.ReLU(inplace=True))
            width += 256
        self.fuse = nn.Sequential(nn.Linear(width, c.feature_dim), nn.ReLU(inplace=True),
                                  nn.Linear(c.feature_dim, c.feature_dim), nn.ReLU(inplace=True))
        self.expression_head = nn.Linear(c.feature_dim, c.code_dim)
        self.landmark_head = nn.Linear(c.feature_dim, 68 * 2)
        self.domain_classifier = nn.Sequential(nn.Linear(c.feature_dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 1))
        # Mirror partners and the code space's mirror (capture/mirror.py), set by training; all zero = unknown.
        self.register_buffer("mirror_code", torch.zeros(c.code_dim, c.code_dim))
        self.register_buffer("mirror_mediapipe", torch.arange(N_MEDIAPIPE))
        self.register_buffer("mirror_ibug68", torch.arange(68))

    def set_mirror(self, code: np.ndarray, mediapipe: np.ndarray, ibug68: np.ndarray) -> None:
        self.mirror_code.copy_(torch.from_numpy(code))
        self.mirror_mediapipe.copy_(torch.from_numpy(mediapipe))
        self.mirror_ibug68.copy_(torch.from_numpy(ibug68))

    @property
    def can_mirror(self) -> bool:
        return bool(self.mirror_code.any())

    def features(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) float in [0, 1] at `config.source_size`; landmarks (B, 478, 2) in [-1, 1] crop
        units, NaN where absent."""
        parts = []
        if self.config.use_image:
            images = (images - 0.5) / 0.25
            whole = images
            if images.shape[-1] != self.config.input_size:
                whole = F.interpolate(images, size=(self.config.input_size,) * 2, mode="area")
            parts.append(self.image_encoder(whole))
            if self.config.region_patches:
                for name, patch in PATCHES.items():
                    parts.append(self.patch_encoders[name](cut_patch(images, landmarks, patch)))
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
    images, points = network_arrays(crops, crop_landmarks, config)
    return torch.from_numpy(images).to(device), torch.from_numpy(points).to(device)


class CaptureModel(ConfiguredModel):
    """The trained network with what running it needs: `predict` on batches of front-end crops."""

    backend = "torch"

    def __init__(self, net: CaptureNet, device: torch.device, metadata: dict | None = None):
        self.net = net.to(device).eval()
        self.device = device
        self.metadata = metadata or {}

    @property
    def config(self) -> CaptureModelConfig:
        return self.net.config


    @torch.no_grad()
    def predict(self, crops, crop_landmarks, mirror_average: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Crops (crop_size RGB uint8) and their (478, 2) landmarks in crop pixels (NaN if unknown) ->
        codes (B, D) and 68 landmarks (B, 68, 2) in crop pixels. With `mirror_average` (and a model that knows
        its mirror), each frame's outputs are averaged with those of its mirror image, mirrored back."""
        images, points = to_network_inputs(crops, crop_landmarks, self.config, self.device)
        mirror = mirror_average and self.net.can_mirror
        if mirror:
            images = torch.cat([images, images.flip(3)])
            points = torch.cat([points, mirror_points(points, self.net.mirror_mediapipe, self.config.crop_size)])
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            code, landmarks, _ = self.net(images, points)
        code, landmarks = code.float(), landmarks.float()
        if mirror:
            n = len(code) // 2
            code = (code[:n] + code[n:] @ self.net.mirror_code) / 2
            mirrored = mirror_points(landmarks[n:], self.net.mirror_ibug68, self.config.crop_size)
            landmarks = (landmarks[:n] + mirrored) / 2
        landmarks = (landmarks + 1) * (self.config.crop_size / 2)
        return code.cpu().numpy(), landmarks.cpu().numpy()

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
        config, metadata = load_config(directory, name)
        net = CaptureNet(config)
        state = load_file(str(directory / f"{name}.safetensors"), device="cpu")
        missing, _ = net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                         strict=False)
        if any(not k.startswith("mirror_") for k in missing):  # models saved before mirroring lack only those
            raise ValueError(f"{directory / name}.safetensors lacks tensors: {', '.join(missing)}")
        return cls(net, torch.device(device), metadata)

    @classmethod
    def from_pretrained(cls, device: str | torch.device | None = "auto") -> CaptureModel:
        weights = resources.files("serep_engine") / "weights"
        if not (Path(str(weights)) / f"{WEIGHTS_NAME}.safetensors").exists():
            raise FileNotFoundError(f"the capture model's weights are missing from {weights}")
        return cls.load(Path(str(weights)), device=pick_device(device))
