import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the expression model's training needs torch (none for Python 3.13)")

from serep_engine.expression.model import ExpressionModel, ExpressionModelConfig
from serep_engine.expression.train import TrainConfig, train_expression

V = 9409


@pytest.fixture(scope="module")
def random_model(face_model):
    torch.manual_seed(0)
    model = ExpressionModel(face_model.face_neutral, face_model.face_triangles, ExpressionModelConfig(code_dim=8))
    model.gradient_basis.data.normal_(std=0.02)
    model.anchor_basis.data.normal_(std=0.02)
    return model


def test_shapes_and_neutral_code(random_model, face_model):
    neutral = face_model.identity_neutral(face_model.identity_weights(7))
    codes = torch.randn(3, 8)
    displacements = random_model.decode(codes, neutral)
    assert displacements.shape == (3, V, 3)
    assert random_model.decode(torch.zeros(2, 8), neutral).abs().max() < 1e-6  # the neutral code decodes to zero
    recovered = random_model.encode(torch.from_numpy(neutral) + displacements, neutral)
    assert recovered.shape == (3, 8)
    torch.testing.assert_close(recovered, codes, atol=1e-3, rtol=1e-3)  # E_exp inverts D_mesh
    # one neutral per sample
    neutrals = np.stack([neutral, face_model.face_neutral])
    per_sample = random_model.decode(codes[:2], neutrals)
    torch.testing.assert_close(per_sample[0], displacements[0])
    torch.testing.assert_close(random_model.encode(torch.from_numpy(neutrals) + per_sample, neutrals), codes[:2],
                               atol=1e-3, rtol=1e-3)


def test_a_code_moves_each_identity_its_own_way(random_model, face_model):
    """Decoding is identity-specific, not the same vectors added to every face."""
    code = torch.ones(1, 8)
    typical = random_model.decode(code, face_model.identity_neutral(face_model.identity_weights(1)))
    stylised = random_model.decode(code, face_model.identity_neutral(face_model.identity_weights(2, 2.5)))
    assert (typical - stylised).abs().max() > 1e-3


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_runs_batched_on_device(random_model, face_model, device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine: the CUDA path runs on the lent GPU machine only")
    model = random_model.to(device)
    basis = model.identity_basis(face_model.face_neutral)
    assert basis.device.type == device and basis.shape == (8, V, 3)
    assert model.decode_with_basis(torch.ones(5, 8, device=device), basis).shape == (5, V, 3)
    random_model.cpu()


def test_save_and_load_round_trip(random_model, tmp_path):
    random_model.save(tmp_path, metadata={"note": "test"})
    loaded = ExpressionModel.load(tmp_path)
    assert json.loads((tmp_path / "expression_model.json").read_text())["note"] == "test"
    torch.testing.assert_close(loaded.gradient_basis, random_model.gradient_basis, atol=1e-4, rtol=1e-3)  # float16
    torch.testing.assert_close(loaded.anchor_basis, random_model.anchor_basis)


@pytest.mark.slow
def test_tiny_training_run_losses_fall(face_model, tmp_path):
    """A 6-dimensional code initialised from only six samples: refining on fresh samples must lower both
    the training loss and the error on held-out expressions."""
    from serep_engine.expression.train import TrainingData

    def config(steps):
        return TrainConfig(identities=3, init_identities=3, init_expressions=2, steps=steps, identities_per_step=2,
                           expressions_per_identity=16, code_dim=6, log_every=5, lr=1e-3)

    initial = train_expression(config(0), face_model, log=lambda _: None)["model"]
    result = train_expression(config(20), face_model, out_dir=tmp_path, log=lambda _: None)
    history = result["history"]
    assert np.mean([h["rec_rms_mm"] for h in history[-2:]]) < 0.8 * history[0]["rec_rms_mm"]

    data = TrainingData(face_model, 3)
    held_out = torch.from_numpy(data.sample(np.random.default_rng(123), 2, 64))

    def error(model):
        basis = model.identity_basis(data.neutrals[2])
        with torch.no_grad():
            codes = model.encode_displacements(held_out, basis)
            return (model.decode_with_basis(codes, basis) - held_out).norm(dim=-1).mean().item()

    assert error(result["model"]) < 0.9 * error(initial)
    assert (tmp_path / "expression_model.safetensors").exists()
    summary = result["summary"]
    assert summary["config"]["steps"] == 20 and summary["data_version"].startswith("ict_facekit")


def test_pretrained_checkpoint_loads():
    model = ExpressionModel.from_pretrained("cpu")
    assert model.n_vertices == V and not model.training


@pytest.mark.slow
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


def test_console_script_is_the_same_cli(repo_root):
    from pathlib import Path

    script = Path(sys.executable).parent / "serep"
    if not script.exists():
        pytest.skip("the serep console script is not installed in this environment")
    via_script = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    via_module = subprocess.run([sys.executable, "-m", "serep_engine", "--help"], capture_output=True, text=True,
                                check=True, cwd=repo_root).stdout
    assert via_script == via_module and "eval" in via_script
