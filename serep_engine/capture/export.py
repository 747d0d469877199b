"""The capture model as an ONNX graph, so that the Blender extension runs it with ONNX Runtime and ships no torch.

The graph is the whole of `CaptureModel.predict` after the numpy preprocessing (`capture/inputs.py`):
images (B, 3, S, S) in [0, 1] and mediapipe landmarks (B, 478, 2) in crop units (NaN where unknown) -> codes
(B, D) and 68 landmarks (B, 68, 2) in crop pixels, mirror averaging included. Batch norms stay separate nodes
(not folded into the convolutions, which ONNX Runtime does itself when it loads the graph), so every learned
tensor keeps the fp16 value the safetensors file holds; those are stored as fp16 with a Cast to fp32 in the graph:
the file is half the size and the numbers are the torch model's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from serep_engine.capture.mirror import mirror_points
from serep_engine.capture.model import CaptureModel

OPSET = 18
FP16_MIN_SIZE = 256  # smaller tensors stay fp32: they save nothing worth a Cast node


class PredictGraph(nn.Module):
    """`CaptureModel.predict` after preprocessing, in traceable form."""

    def __init__(self, model: CaptureModel):
        super().__init__()
        self.net = model.net
        self.mirror = model.net.can_mirror

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net, size = self.net, self.net.config.crop_size
        if self.mirror:
            images = torch.cat([images, images.flip(3)])
            points = torch.cat([points, mirror_points(points, net.mirror_mediapipe, size)])
        feature = net.features(images, points)
        code, landmarks = net.expression_head(feature), net.landmark_head(feature).view(-1, 68, 2)
        if self.mirror:  # the first half is the frames as given, the second their mirror images
            code = code.view(2, -1, code.shape[-1])
            code = (code[0] + code[1] @ net.mirror_code) / 2
            landmarks = landmarks.view(2, -1, 68, 2)
            landmarks = (landmarks[0] + mirror_points(landmarks[1], net.mirror_ibug68, size)) / 2
        return code, (landmarks + 1) * (size / 2)


def export_onnx(model: CaptureModel, path: str | Path) -> Path:
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = PredictGraph(model).cpu().eval()
    size = model.config.source_size
    example = (torch.rand(2, 3, size, size), torch.rand(2, 478, 2) * 2 - 1)
    batch = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
                          input_names=["images", "points"], output_names=["codes", "landmarks"],
                          dynamic_axes={"images": batch, "points": batch, "codes": batch, "landmarks": batch})
    proto = onnx.load(str(path))
    casts, kept = [], []
    for tensor in proto.graph.initializer:
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if values.dtype != np.float32 or values.size < FP16_MIN_SIZE or not np.array_equal(half, values):
            kept.append(tensor)
            continue
        kept.append(numpy_helper.from_array(half, f"{tensor.name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{tensor.name}.fp16"], [tensor.name], to=onnx.TensorProto.FLOAT))
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.doc_string = "SEREP capture model: CaptureModel.predict after preprocessing (serep export-onnx)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path
