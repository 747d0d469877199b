"""The capture model: gradient reversal, a tiny training run, the shipped model through the CLI, pose."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch capture model needs torch (none for Python 3.13)")

from serep_engine.capture.model import PATCHES, CaptureModelConfig, CaptureNet, GradientReversal, cut_patch
from serep_engine.contract.result import CaptureResult
from serep_engine.paths import data_dir

CLIP = data_dir() / "real" / "videos" / "liveportrait_d0.mp4"
AFW = data_dir() / "real" / "faces68" / "afw"


def needs_clip():
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    GradientReversal.apply(x, 0.3).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.3))
    y = torch.randn(5, 3)
    assert torch.equal(GradientReversal.apply(y, 0.3), y)  # identity forward


def test_landmark_input_may_be_missing():
    config = CaptureModelConfig(input_size=64)
    net = CaptureNet(config).eval()
    images = torch.rand(2, 3, config.source_size, config.source_size)
    points = torch.rand(2, 478, 2)
    points[1] = float("nan")
    code, landmarks, _ = net(images, points)
    assert code.shape == (2, 64) and landmarks.shape == (2, 68, 2)
    assert torch.isfinite(code).all() and torch.isfinite(landmarks).all()


def test_region_patches_follow_the_landmarks_or_fall_back_to_the_average_place():
    images = torch.zeros(2, 3, 128, 128)
    images[:, :, 16:32, 96:112] = 1.0  # a bright square centred at crop units (0.625, -0.625)
    landmarks = torch.full((2, 478, 2), float("nan"))
    landmarks[0] = torch.tensor([0.625, -0.625])
    patches = cut_patch(images, landmarks, PATCHES["mouth"])
    height, width = PATCHES["mouth"]["pixels"][::-1]
    assert patches.shape == (2, 3, height, width)
    assert patches[0, :, height // 2, width // 2].min() == 1.0  # centred on the landmarks' mean
    assert patches[1].max() == 0.0  # no landmarks: the average mouth place, far from the square


@pytest.mark.slow
def test_balanced_code_loss_makes_a_blink_count(face_model):
    from serep_engine.capture.train import balanced_gram, region_gram, region_grams
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.expressions import INDEX
    from serep_engine.synth.dataset import SynthGenerator

    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    generator = SynthGenerator(face_model, expression_model)
    weights = np.eye(53, dtype=np.float32)
    codes = torch.from_numpy(generator.code_of_weights(weights))
    blink, jaw = codes[INDEX["eyeBlink_L"]], codes[INDEX["jawOpen"]]

    def blink_per_jaw(gram):
        return float(blink @ gram @ blink / (jaw @ gram @ jaw))

    assert blink_per_jaw(region_gram(expression_model, face_model)) < 0.01  # plain: a blink barely counts
    assert blink_per_jaw(balanced_gram(region_grams(expression_model, face_model), codes.numpy())) > 0.05  # ~0.07


def test_warm_start_copies_the_tensors_that_fit(tmp_path):
    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.train import warm_start

    earlier = CaptureNet(CaptureModelConfig(input_size=64, region_patches=False))
    CaptureModel(earlier, torch.device("cpu")).save(tmp_path)
    later = CaptureNet(CaptureModelConfig(input_size=64))
    copied = warm_start(later, str(tmp_path))
    assert copied > 0
    assert torch.allclose(later.image_encoder[0].weight, earlier.image_encoder[0].weight.half().float())
    assert later.fuse[0].weight.shape != earlier.fuse[0].weight.shape  # left as initialised


@pytest.mark.slow
def test_tiny_training_run_lowers_its_losses(face_model, tmp_path):
    needs_clip()
    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.train import TrainCaptureConfig, train_capture
    from serep_engine.synth.shards import write_synthetic_set

    write_synthetic_set(96, tmp_path / "synth", seed=3, shard_size=32, workers=1, log=lambda _: None)
    config = TrainCaptureConfig(synth=str(tmp_path / "synth"), steps=60, batch_synth=16, batch_real=8, lr=2e-3,
                                validation_shards=1, real_photos=24, real_clips=1, log_every=20, checkpoint_every=30,
                                input_size=64, widths="8,16,32,64")
    summary = train_capture(config, tmp_path / "model", log=lambda _: None)
    history = summary["history"]
    assert history[-1]["code_mm"] < history[0]["code_mm"]
    assert history[-1]["landmarks"] < history[0]["landmarks"]
    model = CaptureModel.load(tmp_path / "model")
    assert model.metadata["training"]["config"]["steps"] == 60
    assert model.config.widths == (8, 16, 32, 64)
    # the saved model knows its mirror: averaging a frame with its mirror image makes the landmarks of a
    # mirrored frame exactly the mirrored landmarks of the frame
    assert model.net.can_mirror
    crop = cv2.resize(cv2.imread(str(sorted(AFW.glob("*.jpg"))[0]))[..., ::-1], (256, 256))
    points = np.random.default_rng(0).uniform(60, 200, (478, 2)).astype(np.float32)
    flipped_points = points[model.net.mirror_mediapipe.numpy()] * [-1, 1] + [255, 0]
    _, landmarks = model.predict([crop], [points])
    _, flipped_landmarks = model.predict([np.ascontiguousarray(crop[:, ::-1])], [flipped_points.astype(np.float32)])
    mirrored_back = flipped_landmarks[0][model.net.mirror_ibug68.numpy()] * [-1, 1] + [255, 0]
    assert np.allclose(mirrored_back, landmarks[0], atol=1e-3)
    # resumable: a rerun with more steps continues from the checkpoint instead of starting over
    config.steps = 70
    again = train_capture(config, tmp_path / "model", log=lambda _: None)
    assert again["history"][-1]["step"] == 70 and len(again["history"]) == 4


@pytest.mark.slow
def test_code_pseudo_labels_carry_the_refined_motion_into_training(face_model, tmp_path):
    needs_clip()
    from serep_engine.capture.model import CaptureModel
    from serep_engine.capture.real import PSEUDO_CODE_CLIPS, build_pseudo_code_set, load_real_set
    from serep_engine.capture.train import TrainCaptureConfig, train_capture
    from serep_engine.paths import weights_dir
    from serep_engine.synth.shards import write_synthetic_set
    from serep_engine.track.frontend import front_end

    pseudo = load_real_set(build_pseudo_code_set(face_model, weights_dir(), max_photos=4, max_clips=1,
                                                 log=lambda _: None))
    clip = [f for f in front_end(data_dir() / "real" / "videos" / f"{PSEUDO_CODE_CLIPS[0]}.mp4") if f.found]
    assert len(pseudo["code"]) == len(clip) + 4 and pseudo["crops"].shape[1] == 256
    network = CaptureModel.from_pretrained("cpu").predict([f.crop for f in clip[:64]],
                                                          [f.crop_landmarks for f in clip[:64]])[0]
    labels = pseudo["code"][:64]
    # about the network's own median, with more motion than the network reads
    assert np.linalg.norm(labels - labels.mean(0), axis=1).mean() > np.linalg.norm(network - network.mean(0),
                                                                                    axis=1).mean()
    write_synthetic_set(32, tmp_path / "synth", seed=3, shard_size=16, workers=1, log=lambda _: None)
    config = TrainCaptureConfig(synth=str(tmp_path / "synth"), steps=4, batch_synth=8, batch_real=4,
                                validation_shards=1, real_photos=4, real_clips=1, log_every=2, input_size=64,
                                widths="8,16,32,64", pseudo_weight=0.5, batch_pseudo=4)
    summary = train_capture(config, tmp_path / "model", log=lambda _: None)
    assert summary["n_pseudo"] == len(pseudo["code"]) and all(h["pseudo"] > 0 for h in summary["history"])


def test_mirror_maps_pair_the_sides(face_model):
    from serep_engine.capture import mirror
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.expressions import INDEX
    from serep_engine.synth.dataset import SynthGenerator

    for partner in (mirror.ibug68_mirror(face_model), mirror.mediapipe_mirror(face_model)):
        assert np.array_equal(partner[partner], np.arange(len(partner)))
        assert (partner != np.arange(len(partner))).mean() > 0.8  # most points have a partner on the other side
    assert mirror.ibug68_mirror(face_model)[36] == 45  # outer eye corners
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    code_mirror = mirror.code_mirror(expression_model, face_model)
    generator = SynthGenerator(face_model, expression_model)
    for left, right in (("eyeBlink_L", "eyeBlink_R"), ("mouthSmile_L", "mouthSmile_R")):
        weights = np.zeros((2, 53), np.float32)
        weights[0, INDEX[left]] = weights[1, INDEX[right]] = 1
        left_code, right_code = generator.code_of_weights(weights)
        assert np.linalg.norm(left_code @ code_mirror - right_code) < 0.05 * np.linalg.norm(right_code)
    points = torch.rand(2, 68, 2) * 2 - 1
    partner = torch.from_numpy(mirror.ibug68_mirror(face_model))
    assert torch.allclose(mirror.mirror_points(mirror.mirror_points(points, partner, 256), partner, 256), points)


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "serep_engine", *map(str, args)], capture_output=True, text=True)


@pytest.mark.slow
def test_capture_cli_writes_a_valid_result_and_a_preview(tmp_path):
    needs_clip()
    out, preview = tmp_path / "take one.npz", tmp_path / "preview.mp4"
    run = _run_cli("capture", CLIP, "--end", 30, "--out", out, "--preview", preview, "--device", "cpu")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    result = CaptureResult.load(out)
    assert summary["frames"] == result.n_frames == 30 and result.face_found.all()
    assert result.basis.shape[1] == 9409 and result.codes_raw.shape == result.codes.shape
    assert np.isfinite(result.head_pose).all()
    capture = cv2.VideoCapture(str(preview))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 30


def test_capture_of_a_clip_without_faces_fails_cleanly(tmp_path):
    clip, out = tmp_path / "noise.mp4", tmp_path / "noise.npz"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(10):
        writer.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    writer.release()
    run = _run_cli("capture", clip, "--out", out, "--device", "cpu")
    assert run.returncode == 1
    assert "no face was found" in run.stderr and "Traceback" not in run.stderr
    assert not out.exists()


def test_head_pose_is_sane_on_a_frontal_clip(face_model):
    needs_clip()
    from serep_engine.track.frontend import front_end
    from serep_engine.track.pose import HeadPoseEstimator
    from serep_engine.track.video import probe

    info = probe(CLIP)
    estimator = HeadPoseEstimator(face_model)
    poses = np.array([estimator(f.landmarks, (info.height, info.width)) for f in front_end(CLIP, 0, 20) if f.found])
    assert len(poses) == 20
    angles = np.degrees(np.linalg.norm(poses[:, :3], axis=1))
    assert angles.max() < 35  # an actor facing the camera
    assert (poses[:, 5] > 10).all() and (poses[:, 5] < 300).all()  # in front of the camera, at a plausible distance


def test_landmark_benchmark_json(tmp_path):
    if not AFW.exists():
        pytest.skip("faces68 photos not found")
    photos = json.loads((AFW / "landmarks68.json").read_text())
    subset = tmp_path / "afw_subset"
    subset.mkdir()
    names = sorted(photos["points"])[:6]
    for name in names:
        (subset / name).write_bytes((AFW / name).read_bytes())
    (subset / "landmarks68.json").write_text(json.dumps({**photos, "points": {n: photos["points"][n] for n in names}}))
    run = _run_cli("eval", "landmarks", "--data", subset, "--json")
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result) == {"nme_inner51", "n_images", "landmark_head_nme"} and result["n_images"] == 6
    assert 0 < result["nme_inner51"] < 0.2 and 0 < result["landmark_head_nme"] < 0.2


def test_winks_come_out_as_winks_on_the_arkit_keys(tmp_path):
    """liveportrait_d3: a real woman winks her left eye (frames 8-21), then her right (34-56), then closes both. The
    ARKit keys an animator's rig gets close the winking eye (as much as mediapipe's own scores, or more) and leave the
    other open; the eyes' turn is the tracker's, not read off the lids."""
    clip = data_dir() / "real" / "videos" / "liveportrait_d3.mp4"
    if not clip.exists():
        pytest.skip(f"real clips not found at {clip.parent}")
    run = _run_cli("capture", clip, "--out", tmp_path / "d3.npz", "--arkit", "--end", "64")
    assert run.returncode == 0, run.stderr[-2000:]
    result = CaptureResult.load(tmp_path / "d3.npz")
    names = [str(n) for n in result.arkit_names]
    left = result.arkit_weights[:, names.index("eyeBlinkLeft")]
    right = result.arkit_weights[:, names.index("eyeBlinkRight")]
    assert left[12:20].min() > 0.4 and right[12:20].max() < 0.1
    assert right[38:47].min() > 0.4 and left[38:47].max() < 0.1
    assert min(left[58:64].mean(), right[58:64].mean()) > 0.6  # both closed
    tracker = [str(n) for n in result.tracker_blendshape_names]
    for name in ("eyeLookDownLeft", "eyeLookOutRight"):
        assert np.corrcoef(result.arkit_weights[:, names.index(name)],
                           result.tracker_blendshapes[:, tracker.index(name)])[0, 1] > 0.8
