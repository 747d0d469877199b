import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from serep_engine.expression.model import ExpressionModel, ExpressionModelConfig
from serep_engine.expression.train import TrainConfig, train_expression

V = 9409


@pytest.fixture(scope="module")
def random_model(face_model):
    torch.manual_seed(0)
    model = ExpressionModel(face_model.face_neutral, ExpressionModelConfig(code_dim=16, identity_dim=4))
    for parameter in (model.basis, model.local, model.global_, model.identity_directions):
        parameter.data.normal_(std=0.01)
    return model


def test_shapes_and_neutral_code(random_model, face_model):
    neutrals = torch.from_numpy(face_model.face_neutral).expand(3, -1, -1) + 0.1 * torch.randn(3, V, 3)
    codes = torch.randn(3, 16)
    displacements = random_model.decode(codes, neutrals)
    assert displacements.shape == (3, V, 3)
    assert random_model.decode(torch.zeros(3, 16), neutrals).abs().max() == 0  # neutral decodes to zero
    recovered = random_model.encode(neutrals + displacements, neutrals)
    assert recovered.shape == (3, 16)
    torch.testing.assert_close(recovered, codes, atol=1e-3, rtol=1e-3)  # E_exp inverts D_mesh


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_batched_on_device(random_model, face_model, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: the CUDA path runs on the lent GPU machine only")
    model = random_model.to(device)
    neutrals = torch.from_numpy(face_model.face_neutral).to(device).expand(2, -1, -1)
    assert model.decode(torch.ones(2, 16, device=device), neutrals).device.type == device
    random_model.cpu()


def test_save_and_load_round_trip(random_model, tmp_path):
    random_model.save(tmp_path, metadata={"note": "test"})
    loaded = ExpressionModel.load(tmp_path)
    assert json.loads((tmp_path / "expression_model.json").read_text())["note"] == "test"
    torch.testing.assert_close(loaded.basis, random_model.basis, atol=1e-5, rtol=1e-3)  # stored as float16


def test_tiny_training_run_losses_fall(face_model, tmp_path):
    config = TrainConfig(identities=3, steps=40, identities_per_step=2, expressions_per_identity=16,
                         code_dim=24, identity_dim=2, log_every=5, lr=1e-3, basis_lr=3e-4)
    result = train_expression(config, face_model, out_dir=tmp_path, log=lambda _: None)
    history = result["history"]
    first = np.mean([h["rec_rms_mm"] for h in history[:2]])
    last = np.mean([h["rec_rms_mm"] for h in history[-2:]])
    assert last < 0.8 * first
    assert (tmp_path / "expression_model.safetensors").exists()
    summary = result["summary"]
    assert summary["config"]["steps"] == 40 and summary["data_version"].startswith("ict_facekit")


def test_pretrained_checkpoint_loads():
    model = ExpressionModel.from_pretrained("cpu")
    assert model.n_vertices == V and not model.training


def test_eval_expression_json(repo_root):
    """The contract: the last stdout line is the JSON object with every key."""
    out = subprocess.run(
        [sys.executable, "-m", "serep_engine", "eval", "expression", "--json", "--identities", "3",
         "--expressions", "4"],
        capture_output=True, text=True, cwd=repo_root, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    regions = {"forehead", "nose", "cheek", "mouth", "mean"}
    for key in ("reconstruction_mm", "retarget_mm", "naive_retarget_mm"):
        assert set(result[key]) == regions
    assert set(result["stylised"]["retarget_mm"]) == regions
    assert set(result["stylised"]["naive_retarget_mm"]) == regions
    assert result["n_identities"] == 6 and result["n_pairs"] == 24
    assert 0 <= result["neutral_leak_mm"] <= 0.02


def test_cli_bad_input_is_one_line(repo_root, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "serep_engine", "eval", "expression", "--weights", str(tmp_path / "missing")],
        capture_output=True, text=True, cwd=repo_root,
    )
    assert out.returncode != 0
    assert out.stderr.strip().startswith("serep: error:") and len(out.stderr.strip().splitlines()) == 1
