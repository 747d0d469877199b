"""The capture model run by ONNX Runtime, without torch: the Blender extension's backend.

`OnnxCaptureModel` has what the engine uses of `CaptureModel` (`predict`, `config`, `code_dim`, `crop_size`),
on the graph `serep export-onnx` writes (capture/export.py), mirror averaging inside the graph. One ONNX Runtime
thread pool of `device.thread_count()` threads, made when the session is: the engine's thread limit is that number.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from serep_engine.capture.inputs import WEIGHTS_NAME, CaptureModelConfig, ConfiguredModel, load_config, network_arrays
from serep_engine.device import thread_count

ONNX_NAME = f"{WEIGHTS_NAME}.onnx"


class OnnxCaptureModel(ConfiguredModel):
    backend = "onnx"

    def __init__(self, path: str | os.PathLike, config: CaptureModelConfig, metadata: dict | None = None,
                 device: str = "cpu"):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = thread_count()
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("CUDA was requested but this ONNX Runtime has no CUDA execution provider")
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self.config = config
        self.metadata = metadata or {}
        self.device = device

    def predict(self, crops, crop_landmarks, mirror_average: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """As `CaptureModel.predict`: codes (B, D) and 68 landmarks (B, 68, 2) in crop pixels."""
        if not mirror_average:
            raise ValueError("the ONNX graph always averages mirror images; use the torch CaptureModel without")
        images, points = network_arrays(crops, crop_landmarks, self.config)
        codes, landmarks = self.session.run(None, {"images": images, "points": points})
        return codes, landmarks

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> OnnxCaptureModel:
        """The graph `capture_model.onnx` with the config `capture_model.json` beside it."""
        directory = Path(directory)
        if not (directory / ONNX_NAME).exists():
            raise FileNotFoundError(f"no ONNX capture model at {directory / ONNX_NAME} (serep export-onnx writes it)")
        config, metadata = load_config(directory)
        return cls(directory / ONNX_NAME, config, metadata, device)

    @classmethod
    def from_pretrained(cls, device: str = "cpu") -> OnnxCaptureModel:
        return cls.load(Path(str(resources.files("serep_engine") / "weights")), device)
