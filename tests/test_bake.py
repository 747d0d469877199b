import numpy as np
import pytest

from serep_engine.contract.result import CaptureResult, ResultFileError
from serep_engine.shapekeys.basis import compress


def make_result(n_frames=5, keys=4, vertices=10, **overrides):
    rng = np.random.default_rng(0)
    fields = dict(frames=np.arange(n_frames), fps=25.0, face_found=np.ones(n_frames, bool),
                  codes=rng.normal(size=(n_frames, 8)), head_pose=np.zeros((n_frames, 6)),
                  basis=rng.normal(size=(keys, vertices, 3)), weights=rng.normal(size=(n_frames, keys)))
    fields.update(overrides)
    return CaptureResult(**fields)


def test_result_round_trip(tmp_path):
    result = make_result(arkit_names=np.array(["jawOpen", "eyeBlinkLeft"]), arkit_weights=np.full((5, 2), 0.5))
    loaded = CaptureResult.load(result.save(tmp_path / "take.npz"))
    np.testing.assert_array_equal(loaded.weights, result.weights)
    assert loaded.fps == 25.0 and list(loaded.arkit_names) == ["jawOpen", "eyeBlinkLeft"]
    expected = np.einsum("k,kvi->vi", result.weights[2], result.basis)
    np.testing.assert_allclose(loaded.displacements(2), expected, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("overrides, message", [
    ({"weights": np.zeros((5, 3))}, "weights must have shape"),
    ({"frames": np.array([0, 2, 1, 3, 4])}, "strictly increasing"),
    ({"fps": 0.0}, "fps"),
    ({"codes": np.full((5, 8), np.nan)}, "NaN"),
    ({"head_pose": np.zeros((5, 3))}, "head_pose"),
])
def test_bad_results_are_refused(overrides, message):
    with pytest.raises(ResultFileError, match=message):
        make_result(**overrides)


def test_bad_files_are_refused_without_unpickling(tmp_path):
    with pytest.raises(ResultFileError, match="not found"):
        CaptureResult.load(tmp_path / "missing.npz")
    (tmp_path / "noise.npz").write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(ResultFileError, match="not a readable"):
        CaptureResult.load(tmp_path / "noise.npz")
    np.savez(tmp_path / "pickled.npz", frames=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ResultFileError):
        CaptureResult.load(tmp_path / "pickled.npz")
    np.savez(tmp_path / "partial.npz", frames=np.arange(3))
    with pytest.raises(ResultFileError, match="lacks"):
        CaptureResult.load(tmp_path / "partial.npz")


def test_compress_meets_the_tolerance_with_fewer_keys():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(16, 200, 3)).astype(np.float32)
    # 300 frames that only use a 5-dimensional family of codes, plus a little noise
    weights = (rng.normal(size=(300, 5)) @ rng.normal(size=(5, 16)) + 1e-5 * rng.normal(size=(300, 16)))
    new_basis, new_weights, error = compress(basis, weights, tolerance_cm=1e-3)
    assert new_basis.shape[0] <= 6 and error <= 1e-3
    reproduced = np.tensordot(new_weights, new_basis, axes=1)
    assert np.abs(reproduced - np.tensordot(weights, basis, axes=1)).max() < 1e-3
    few_basis, _, few_error = compress(basis, weights, tolerance_cm=0.0, max_keys=2)
    assert few_basis.shape[0] == 2 and few_error > 1e-3


def test_decoded_codes_bake_exactly_and_compress_within_tolerance(face_model):
    """The identity's decoded basis with the codes as weights is the decoding itself; compressing the keys
    keeps every vertex of every frame within the stated tolerance."""
    import torch

    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.expressions import sample_expressions

    model = ExpressionModel.from_pretrained("cpu", face_model)
    neutral = face_model.identity_neutral(face_model.identity_weights(3))
    basis = model.identity_basis(neutral).detach()
    weights = sample_expressions(np.random.default_rng(2), 40) @ face_model.face_expression_basis.reshape(53, -1)
    codes = model.encode_displacements(torch.from_numpy(weights.reshape(40, -1, 3)), basis)
    result = make_result(n_frames=40, basis=basis.numpy(), weights=codes.numpy(), codes=codes.numpy())
    decoded = model.decode(codes, neutral).detach().numpy()
    assert np.abs(result.displacements(7) - decoded[7]).max() < 1e-5
    small_basis, small_weights, error = compress(result.basis, result.weights, tolerance_cm=0.005)
    assert error <= 0.005 and len(small_basis) < len(result.basis)
    assert np.abs(np.tensordot(small_weights, small_basis, axes=1) - decoded).max() <= 0.005 + 1e-6
