"""The torch-free inference path (issue 16): the committed ONNX graph is the safetensors model, ONNX Runtime gives
the torch path's codes, the numpy expression decoder the torch model's numbers, and a capture (`serep capture`
and the worker's job) runs in a process where torch cannot be imported."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serep_engine.contract import CaptureResult
from serep_engine.contract.job import Job, JobOptions

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "serep_engine" / "weights"
CLIP = REPO.parent / "shared" / "data" / "real" / "videos" / "May_5s.mp4"
FRAMES = 20
NO_TORCH = "import sys; sys.modules['torch'] = None; "  # `import torch` raises from here on
CODE_TOLERANCE = 1e-3  # ONNX Runtime vs torch on whole captures: network codes differ by ~2e-6, refined ones by less


def run_without_torch(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", NO_TORCH + code], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    (tmp_path / "stderr.txt").write_text(done.stderr)
    return done


@pytest.fixture(scope="module")
def torch_models(face_model):
    from serep_engine.capture.model import CaptureModel
    from serep_engine.expression.model import ExpressionModel

    if not (WEIGHTS / "capture_model.onnx").exists():
        pytest.skip("serep_engine/weights/capture_model.onnx is missing (serep export-onnx writes it)")
    return CaptureModel.load(WEIGHTS), ExpressionModel.from_pretrained("cpu", face_model)


@pytest.fixture(scope="module")
def real_crops():
    """The front end's crops and landmarks of a real clip's first frames (one frame's landmarks removed)."""
    from serep_engine.track.frontend import front_end
    from serep_engine.track.video import probe

    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    stream = front_end(probe(CLIP), 0, FRAMES, crop_size=256)
    try:
        frames = [f for f in stream if f.found]
    finally:
        stream.close()
    crops, landmarks = [f.crop for f in frames], [f.crop_landmarks.copy() for f in frames]
    landmarks[0][:] = np.nan
    return crops, landmarks


def test_committed_onnx_graph_is_the_safetensors_model(torch_models, real_crops):
    """A retrained capture model without `serep export-onnx` fails here."""
    from serep_engine.capture.runtime import OnnxCaptureModel

    torch_model, _ = torch_models
    onnx_model = OnnxCaptureModel.from_pretrained()
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(3)] + real_crops[0][:5]
    landmarks = [rng.uniform(40, 216, (478, 2)) for _ in range(3)] + real_crops[1][:5]
    for batch in (slice(0, 1), slice(0, 8)):  # the graph's batch is dynamic
        codes, points = onnx_model.predict(crops[batch], landmarks[batch])
        torch_codes, torch_points = torch_model.predict(crops[batch], landmarks[batch])
        np.testing.assert_allclose(codes, torch_codes, rtol=0, atol=1e-4)
        np.testing.assert_allclose(points, torch_points, rtol=0, atol=1e-2)  # crop pixels
    assert onnx_model.code_dim == torch_model.code_dim and onnx_model.crop_size == torch_model.crop_size


def test_onnx_runtime_gives_the_torch_codes_on_real_crops(torch_models, real_crops):
    from serep_engine.capture.runtime import OnnxCaptureModel

    crops, landmarks = real_crops
    codes, points = OnnxCaptureModel.from_pretrained().predict(crops, landmarks)
    torch_codes, torch_points = torch_models[0].predict(crops, landmarks)
    assert np.abs(codes - torch_codes).max() < 1e-4 and np.abs(points - torch_points).max() < 1e-2


def test_numpy_expression_decoder_is_the_torch_model(torch_models, face_model):
    import torch

    from serep_engine.expression.decoder import ExpressionDecoder
    from serep_engine.facemodel.identities import eval_identity

    model = torch_models[1]
    decoder = ExpressionDecoder.from_pretrained(face_model)
    neutral = face_model.identity_neutral(eval_identity(face_model, 3))
    with torch.no_grad():
        torch_basis = model.identity_basis(neutral).numpy()
        shapes = torch.from_numpy(face_model.face_expression_basis).float()
        torch_codes = model.encode_displacements(shapes, torch.from_numpy(torch_basis)).numpy()
        exact = copy.deepcopy(model).double().encode_displacements(shapes.double(),
                                                                   torch.from_numpy(torch_basis).double()).numpy()
    basis = decoder.identity_basis(neutral)
    np.testing.assert_array_equal(basis, torch_basis)  # the same float64 solve, rounded once
    codes = decoder.encode_displacements(shapes.numpy(), basis)
    assert codes.dtype == np.float32 and np.abs(codes - exact).max() < 1e-5
    # torch solves in float32: ~1.5e-3 off on codes up to ~10
    assert np.abs(codes - torch_codes).max() < 3e-4 * np.abs(torch_codes).max()
    np.testing.assert_allclose(decoder.decode_with_basis(codes, basis),
                               model.decode_with_basis(torch.from_numpy(codes), torch.from_numpy(basis)).numpy(),
                               rtol=0, atol=1e-5)
    assert ExpressionDecoder.of(model).digest() == decoder.digest()


@pytest.fixture(scope="module")
def torch_capture(face_model, tmp_path_factory):
    """A target mesh (a held-out ICT head, metres) and the torch backend's capture of the clip's first frames on it."""
    from serep_engine.engine import Engine, TargetMesh
    from serep_engine.eval.retarget import HEAD_POLYGONS, HEAD_VERTICES
    from serep_engine.facemodel.ict import quads_to_triangles
    from serep_engine.facemodel.identities import eval_identity

    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    head = face_model.identity_neutral(eval_identity(face_model, 20), face_only=False)[:HEAD_VERTICES]
    target = tmp_path_factory.mktemp("target") / "head.npz"
    np.savez(target, vertices=0.01 * head, faces=quads_to_triangles(face_model.polygons[:HEAD_POLYGONS]))
    engine = Engine.from_pretrained("cpu", face_model, backend="torch")
    assert engine.backend == "torch"
    return target, engine.capture(CLIP, 0, FRAMES, target=TargetMesh.load(target))


def assert_same_capture(result: CaptureResult, reference: CaptureResult) -> None:
    assert result.frames.tolist() == reference.frames.tolist()
    np.testing.assert_array_equal(result.face_found, reference.face_found)
    assert np.abs(result.codes_raw - reference.codes_raw).max() < CODE_TOLERANCE
    assert np.abs(result.codes - reference.codes).max() < CODE_TOLERANCE
    decoded = np.einsum("fk,kvi->fvi", result.weights, result.basis)
    expected = np.einsum("fk,kvi->fvi", reference.weights, reference.basis)
    assert np.abs(decoded - expected).max() < 2e-4  # metres on the target; each basis is within 5e-5 of its codes


def test_serep_capture_runs_without_torch(torch_capture, tmp_path):
    target, reference = torch_capture
    out = tmp_path / "result.npz"
    argv = ["capture", str(CLIP), "--out", str(out), "--target", str(target), "--end", str(FRAMES)]
    done = run_without_torch(f"from serep_engine.cli import main; sys.exit(main({argv!r}))", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["backend"] == "onnx" and summary["device"] == "cpu"
    assert_same_capture(CaptureResult.load(out), reference)


def test_worker_job_runs_without_torch(torch_capture, tmp_path):
    target, reference = torch_capture
    job = Job(clip=CLIP, output=tmp_path / "result.npz", frame_start=0, frame_end=FRAMES, target=target,
              options=JobOptions(arkit=True, rebake=True), shape_keys=["Basis", "JawOpen"])
    path = job.save(tmp_path / "job.json")
    done = run_without_torch(f"from serep_engine.worker import main; sys.exit(main({str(path)!r}))", tmp_path)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and lines[-1]["type"] == "done", done.stderr[-3000:]
    result = CaptureResult.load(tmp_path / "result.npz")
    assert_same_capture(result, reference)
    assert result.arkit_weights.shape == (FRAMES, 52) and result.region_maps is not None


def test_run_time_modules_import_without_torch(tmp_path):
    """Everything but training, evaluation, the torch capture model and its export imports without torch."""
    code = ("import importlib, json, pkgutil, serep_engine\n"
            "failed = []\n"
            "for module in pkgutil.walk_packages(serep_engine.__path__, 'serep_engine.'):\n"
            "    try:\n"
            "        module.name.endswith('__main__') or importlib.import_module(module.name)\n"
            "    except ImportError:\n"
            "        failed.append(module.name)\n"
            "print(json.dumps(failed))")
    done = run_without_torch(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    needs_torch = {"serep_engine.capture.export", "serep_engine.capture.model", "serep_engine.capture.train",
                   "serep_engine.expression.model", "serep_engine.expression.train"}
    failed = set(json.loads(done.stdout.splitlines()[-1]))
    assert {m for m in failed if m.split(".")[1] not in ("eval", "synth")} == needs_torch
