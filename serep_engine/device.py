"""One place that picks where the engine runs: the inference backend (torch or ONNX Runtime), the device (CUDA
when present, else the CPU) and the engine's CPU thread count. Torch is imported only when it is asked about."""

from __future__ import annotations

import os

BACKENDS = ("auto", "torch", "onnx")


def pick_device(requested="auto"):
    """The torch device: CUDA when present, else the CPU; an error when CUDA is asked for and torch has none."""
    import torch

    if requested is None or str(requested) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA GPU is available to torch")
    return device


def torch_cuda() -> bool:
    """Whether torch is installed and sees a CUDA GPU."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def torch_weights() -> bool:
    """Whether the capture model's torch weights are here (a checkout; the extension ships only the ONNX graph)."""
    from serep_engine.paths import weights_dir

    return (weights_dir() / "capture_model.safetensors").is_file()


def onnx_runtime_providers() -> list[str]:
    """ONNX Runtime's execution providers here ([] without ONNX Runtime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return onnxruntime.get_available_providers()


def pick_backend(device: str = "auto", backend: str = "auto") -> tuple[str, str]:
    """(backend, device) for inference. Automatic: torch on a CUDA GPU torch sees (asked for, or "auto") where the
    torch weights are (a checkout: the extension has the ONNX graph only); else ONNX
    Runtime (on its CUDA provider when CUDA is asked for and only ONNX Runtime has it), else torch on the CPU.
    Training always uses torch and does not come here."""
    device = str(device or "auto")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "torch" or (backend == "auto" and device in ("auto", "cuda") and torch_cuda() and torch_weights()):
        return "torch", pick_device(device).type
    providers = onnx_runtime_providers()
    if backend == "onnx" or providers:
        if not providers:
            raise RuntimeError("the ONNX backend was asked for but onnxruntime is not installed")
        cuda = "CUDAExecutionProvider" in providers
        if device == "cuda" and not cuda:
            raise RuntimeError("CUDA was requested, but ONNX Runtime here has no CUDA provider (install "
                               "onnxruntime-gpu) and torch has no CUDA GPU or no capture weights (use a checkout)")
        return "onnx", "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
    return "torch", pick_device(device).type


def thread_count() -> int:
    """The engine's CPU threads for its own numerical work (torch, BLAS, ONNX Runtime): a quarter of the cores (one
    on a laptop), since decoding and tracking run beside it and Blender or other work shares the machine."""
    return max(1, (os.cpu_count() or 1) // 4)
