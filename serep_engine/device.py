"""One place that picks the torch device: CUDA when present, else the CPU."""

from __future__ import annotations

import torch


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA GPU is available to torch")
    return device
