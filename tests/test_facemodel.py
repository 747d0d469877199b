import numpy as np
import pytest

from serep_engine.facemodel.deformation_transfer import (
    DeformationTransfer,
    deformation_gradients,
    outer_boundary,
)
from serep_engine.facemodel.expressions import INDEX, sample_expressions
from serep_engine.facemodel.ict import FACE_VERTEX_COUNT, ICTModel
from serep_engine.facemodel.identities import eval_identity, identity_shapes, training_identity
from serep_engine.facemodel.regions import REGION_NAMES, alignment_masks, draw_regions, region_masks


def test_packed_model_loads(face_model):
    assert face_model.face_neutral.shape == (FACE_VERTEX_COUNT, 3)
    assert face_model.expression_basis.shape[0] == 53 == len(face_model.expression_names)
    assert face_model.face_triangles.max() < FACE_VERTEX_COUNT
    assert face_model.landmarks68.max() < FACE_VERTEX_COUNT


@pytest.mark.slow
def test_obj_checkout_loads_the_same_model(face_model, tmp_path):
    """A user can rebuild from an original ICT-FaceKit checkout (FaceXModel/ OBJ files)."""
    folder = tmp_path / "FaceXModel"
    folder.mkdir()

    def write(name, vertices):
        lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
        lines += ["f " + " ".join(str(i + 1) for i in poly if i >= 0) for poly in face_model.polygons]
        (folder / f"{name}.obj").write_text("\n".join(lines))

    write("generic_neutral_mesh", face_model.neutral)
    for i in range(2):
        write(f"identity{i:03d}", face_model.neutral + face_model.identity_basis[i])
    for name, delta in zip(face_model.expression_names, face_model.expression_basis, strict=True):
        write(name, face_model.neutral + delta)
    loaded = ICTModel.load(tmp_path)
    assert loaded.identity_basis.shape[0] == 2
    np.testing.assert_allclose(loaded.neutral, face_model.neutral, atol=1e-5)
    np.testing.assert_allclose(loaded.expression_basis, face_model.expression_basis, atol=2e-5)
    np.testing.assert_array_equal(loaded.polygons, face_model.polygons)


def test_missing_model_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="ICT-FaceKit model not found"):
        ICTModel.load(tmp_path / "nope.npz")


def test_transfer_onto_the_generic_neutral_reproduces_the_shape(face_model):
    triangles = face_model.face_triangles
    source = face_model.face_neutral
    transfer = DeformationTransfer(source, triangles, outer_boundary(triangles, len(source)))
    shapes = face_model.face_expression_basis[[10, 26, 45]]  # eyeBlink_L, jawOpen, mouthSmile_L
    out = transfer.transfer_many(source, source[None] + shapes)
    assert np.abs(out - shapes).max() < 1e-4  # cm


def test_transfer_onto_an_identity_keeps_the_deformation_gradients(face_model):
    """Deformation transfer applies the source's per-triangle deformation gradients to the identity's own
    triangles (what it minimises) far better than adding the source's displacements (the naive 3DMM
    retarget). Exact agreement is impossible: the gradients are not integrable on another shape."""
    triangles = face_model.face_triangles
    source = face_model.face_neutral
    target = face_model.identity_neutral(eval_identity(face_model, 0, stylised=True))
    transfer = DeformationTransfer(target, triangles, outer_boundary(triangles, len(source)))

    def edges(vertices):
        return np.stack([vertices[triangles[:, k]] - vertices[triangles[:, 0]] for k in (1, 2)], axis=1)

    for name in ("jawOpen", "mouthSmile_L"):
        shape = face_model.face_expression_basis[INDEX[name]]
        transferred = transfer.transfer(source, source + shape)
        gradients = deformation_gradients(source, source + shape, triangles)
        wanted = np.einsum("tij,tej->tei", gradients, edges(target))

        def edge_error(displacement, wanted=wanted):
            return np.linalg.norm(edges(target + displacement) - wanted, axis=2).mean()

        assert edge_error(transferred) < 0.7 * edge_error(shape), name
        assert np.abs(transferred - shape).max() > 1e-2  # the identity changes the displacements (cm)


def test_identity_shapes_are_cached(face_model):
    weights = training_identity(face_model, 0)
    first = identity_shapes(face_model, weights)
    assert first.shape == (53, FACE_VERTEX_COUNT, 3)
    np.testing.assert_array_equal(identity_shapes(face_model, weights), first)


def test_training_and_evaluation_identities_are_disjoint(face_model):
    train = {training_identity(face_model, i).tobytes() for i in range(50)}
    assert not train & {eval_identity(face_model, i).tobytes() for i in range(50)}
    stylised = np.stack([eval_identity(face_model, i, stylised=True) for i in range(50)])
    assert 2.2 < stylised.std() < 2.8


def test_regions_are_disjoint_and_drawn(face_model, tmp_path):
    masks = region_masks(face_model)
    stacked = np.stack([masks[name] for name in REGION_NAMES])
    assert (stacked.sum(0) <= 1).all() and (stacked.sum(1) > 500).all()
    lm = face_model.face_neutral[face_model.landmarks68]
    vertices = face_model.face_neutral
    nearest = lambda p: np.argmin(np.linalg.norm(vertices - p, axis=1))  # noqa: E731
    assert masks["nose"][nearest(lm[30])] and masks["mouth"][nearest(lm[62])]
    assert masks["forehead"][nearest(lm[19])] and masks["cheek"][nearest(lm[3])]
    aligned = alignment_masks(face_model)
    np.testing.assert_array_equal(aligned["cheek"], masks["cheek"] | masks["mouth"])
    draw_regions(face_model, tmp_path / "regions.png")
    assert (tmp_path / "regions.png").stat().st_size > 10_000


def test_expression_sampler_is_realistic():
    weights = sample_expressions(np.random.default_rng(0), 4000)
    assert weights.min() >= 0 and weights.max() <= 1
    active = (weights > 0.05).sum(1)
    assert 0.02 < (weights.sum(1) == 0).mean() < 0.1  # some neutral
    assert np.median(active) < 15  # sparse
    assert (weights == 1).any(1).mean() > 0.1  # extremes
    smile_l, squint_l = weights[:, INDEX["mouthSmile_L"]], weights[:, INDEX["cheekSquint_L"]]
    assert np.corrcoef(smile_l, squint_l)[0, 1] > 0.5  # correlated actions
    blink_l, blink_r = weights[:, INDEX["eyeBlink_L"]], weights[:, INDEX["eyeBlink_R"]]
    assert ((blink_l > 0.5) & (blink_r > 0.5)).sum() > 50  # both eyes
    assert ((blink_l > 0.5) & (blink_r < 0.3)).sum() > 20  # winks
    jaw = weights[:, [INDEX["jawLeft"], INDEX["jawRight"]]]
    assert (jaw > 0).any(0).all()
