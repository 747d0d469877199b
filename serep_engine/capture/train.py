"""Semi-supervised training of the capture model (`serep train capture`).

Every step draws a batch of synthetic samples (`serep synth` shards: crop, mediapipe landmarks, true code
and 68 landmarks) and a batch of real images (`capture/real.py`: annotated photos and clip frames with
pseudo-labels). Losses:
- code, on synthetic samples only: the error of the decoded mesh through the frozen D_mesh. Decoding onto
  one identity is linear, so the mean squared per-vertex error is a quadratic form dz^T G dz with G the
  Gram matrix of the template's decoded basis, each region weighted equally (as MultiREX scores them);
- landmarks (H_lmks), on both: smooth L1 on visible / annotated points;
- domain: C_d behind the gradient-reversal layer tells synthetic from real; its strength ramps up;
- pseudo codes (`pseudo_weight` > 0), on real crops whose codes the landmark refinement read
  (capture/real.py: build_pseudo_code_set): the code loss again, weighted.
Seeded; a checkpoint (weights, optimiser, step) is written every `checkpoint_every` steps and picked up
again by a rerun with the same `--out`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from serep_engine.capture.metrics import nme_inner51
from serep_engine.capture.mirror import code_mirror, ibug68_mirror, mediapipe_mirror, mirror_points
from serep_engine.capture.model import CaptureModel, CaptureModelConfig, CaptureNet
from serep_engine.device import pick_device
from serep_engine.facemodel.regions import REGION_NAMES, region_masks


@dataclass
class TrainCaptureConfig:
    synth: str = ""  # folder of `serep synth` shards (default: $SEREP_CACHE/capture-synth-v2, renders with face paint)
    steps: int = 6000
    batch_synth: int = 48
    batch_real: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    domain_weight: float = 0.1  # 0 turns domain adaptation off
    landmark_weight: float = 1.0
    use_image: bool = True
    use_landmarks: bool = True
    landmark_dropout: float = 0.15  # share of samples whose landmark input is hidden (so the image must work alone)
    input_size: int = 96
    widths: str = "16,32,64,128"  # channels of the CNNs' stages, comma-separated (wider for GPU training)
    spatial_features: bool = True  # flatten the CNN's last map instead of averaging it (see CaptureModelConfig)
    region_patches: bool = True  # mouth and eyes patches at twice the resolution (see CaptureModelConfig)
    validation_shards: int = 2  # the set's last shards, never trained on
    max_shards: int = 0  # 0 = all
    real_photos: int = 0  # annotated photos used (0 = all; small numbers for quick runs)
    real_clips: int = 0  # real clips used for pseudo-labels (0 = all)
    checkpoint_every: int = 500
    log_every: int = 100
    device: str = "auto"
    balanced_code_loss: bool = True  # regions' errors relative to their motion (see balanced_gram); False = plain
    init_from: str = ""  # a capture model folder whose tensors of matching name and shape start this run
    mirror: bool = True  # show each sample mirrored half the time (capture/mirror.py)
    pseudo_weight: float = 0.0  # weight of the real crops' code pseudo-labels (0: none are used)
    batch_pseudo: int = 16
    pseudo_from: str = ""  # capture model whose codes are the refinement's prior (default: init_from, else shipped)


def region_grams(expression_model, face_model) -> dict[str, torch.Tensor]:
    """Per region r, the (D, D) G_r with dz^T G_r dz = the mean squared per-vertex error (cm^2) of the
    decoded template mesh on r. Besides MultiREX's four regions: "eyelids", the vertices a blink moves
    (they are a sliver of the forehead region, so without their own term blinks would barely count)."""
    from serep_engine.facemodel.expressions import INDEX

    with torch.no_grad():
        basis = expression_model.identity_basis(face_model.face_neutral).double()  # (D, V, 3)
    masks = dict(region_masks(face_model))
    blink = face_model.face_expression_basis[[INDEX["eyeBlink_L"], INDEX["eyeBlink_R"]]]
    masks["eyelids"] = np.linalg.norm(blink, axis=2).max(0) > 0.1  # cm
    grams = {}
    for name, mask in masks.items():
        part = basis[:, torch.from_numpy(np.asarray(mask))].reshape(basis.shape[0], -1)
        grams[name] = (part @ part.T / mask.sum()).float()
    return grams


def multirex_gram(grams: dict[str, torch.Tensor]) -> torch.Tensor:
    """(D, D) G with dz^T G dz = mean over MultiREX's four regions of the mean squared per-vertex error
    (cm^2) of the decoded template mesh: the scale validation reports in."""
    return sum(grams[name] for name in REGION_NAMES) / len(REGION_NAMES)


def region_gram(expression_model, face_model) -> torch.Tensor:
    return multirex_gram(region_grams(expression_model, face_model))


def balanced_gram(grams: dict[str, torch.Tensor], codes: np.ndarray) -> torch.Tensor:
    """The training loss's G: the regions' (and the eyelids') squared errors, each divided by the square root
    of how much that region moves in the training codes, scaled so that predicting zero costs 1 on average.
    A plain mean squared error is ruled by the jaw (a full jawOpen weighs ~280 blinks), so brows and eyelids
    went unlearned. MultiREX averages the regions' errors in mm, whose gradients weigh each region's squared
    error by 1 / its RMS error; the region's motion stands in for that error. (Dividing by the motion itself
    learned blinks faster but measured worse on SynthREX in a 2500-step ablation.)"""
    z = torch.from_numpy(codes).float()
    gram = sum(g / torch.einsum("bi,ij,bj->b", z, g, z).mean().sqrt() for g in grams.values())
    return gram / torch.einsum("bi,ij,bj->b", z, gram, z).mean()


def _load_crops(crops: np.ndarray, size: int) -> np.ndarray:
    if crops.shape[1] == size:
        return crops
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


def load_synth(folder: Path, size: int, max_shards: int = 0) -> dict:
    """The shards' crops (resized to `size`), codes and landmarks as whole-set arrays. The arrays are made at
    their full size first and filled shard by shard, so loading needs the set's memory once, not twice."""
    from serep_engine.synth.shards import read_shard

    paths = sorted(folder.glob("shard_*.npz"))
    if max_shards:
        paths = paths[:max_shards]
    if not paths:
        raise FileNotFoundError(f"no synthetic shards in {folder} (make them with `serep synth --out {folder}`)")
    counts = []
    for path in paths:
        with np.load(path) as shard:
            counts.append(len(shard["code"]))
    data, start = {}, 0
    for path, count in zip(paths, counts, strict=True):
        shard = read_shard(path)
        part = {"crops": _load_crops(shard["crops"], size), "code": shard["code"],
                "mp_landmarks": shard["mp_landmarks"], "landmarks": shard["landmarks"],
                "landmark_weight": shard["visible"].astype(np.float32)}
        for key, value in part.items():
            if key not in data:
                data[key] = np.empty((sum(counts), *value.shape[1:]), value.dtype)
            data[key][start:start + count] = value
        data.setdefault("crop_size", shard["crops"].shape[1])
        start += count
    return data


class Augment:
    """Random similarity jitter of crop and landmarks together, colour jitter, landmark-input noise/dropout."""

    def __init__(self, generator: torch.Generator, landmark_dropout: float):
        self.generator = generator
        self.landmark_dropout = landmark_dropout

    def _uniform(self, n, low, high):
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def __call__(self, images, mp_points, points):
        """images (B, 3, S, S) in [0, 1], points in [-1, 1] crop units."""
        b = images.shape[0]
        angle = self._uniform(b, -0.14, 0.14)
        scale = self._uniform(b, 0.93, 1.07)
        shift = self._uniform(2 * b, -0.06, 0.06).view(b, 2)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        forward = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
        # affine_grid maps output to input coordinates: the inverse of the forward point map.
        inverse = torch.linalg.inv(forward)
        theta = torch.cat([inverse, -(inverse @ shift[:, :, None])], 2)
        grid = F.affine_grid(theta, images.shape, align_corners=False)
        images = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
        mp_points = mp_points @ forward.transpose(1, 2) + shift[:, None]
        points = points @ forward.transpose(1, 2) + shift[:, None]
        gain = self._uniform(b, 0.7, 1.3).view(b, 1, 1, 1)
        bias = self._uniform(b, -0.12, 0.12).view(b, 1, 1, 1)
        tint = self._uniform(3 * b, 0.9, 1.1).view(b, 3, 1, 1)
        images = ((images - 0.5) * gain + 0.5 + bias) * tint
        grey = (torch.rand(b, generator=self.generator) < 0.1).view(b, 1, 1, 1)
        images = torch.where(grey, images.mean(1, keepdim=True).expand_as(images), images).clamp(0, 1)
        mp_points = mp_points + 0.004 * torch.randn(mp_points.shape, generator=self.generator)
        hidden = (torch.rand(b, generator=self.generator) < self.landmark_dropout).view(b, 1, 1)
        mp_points = torch.where(hidden, torch.full_like(mp_points, float("nan")), mp_points)
        return images, mp_points, points


def _batch(data: dict, index: np.ndarray, crop_size: float):
    images = torch.from_numpy(data["crops"][index]).permute(0, 3, 1, 2).float().div_(255)
    mp_points = torch.from_numpy(data["mp_landmarks"][index]) / (crop_size / 2) - 1
    points = torch.from_numpy(data["landmarks"][index]) / (crop_size / 2) - 1
    return images, mp_points, points, torch.from_numpy(data["landmark_weight"][index])


def mirror_some(flip: torch.Tensor, partners: dict, images, mp_points, points, visible, crop_size: float):
    """The batch with the samples where `flip` is set replaced by their mirror images (`partners`: the
    "mediapipe" and "ibug68" mirror partners)."""
    where = flip.view(-1, 1, 1)
    images = torch.where(where[..., None], images.flip(3), images)
    mp_points = torch.where(where, mirror_points(mp_points, partners["mediapipe"], crop_size), mp_points)
    points = torch.where(where, mirror_points(points, partners["ibug68"], crop_size), points)
    visible = torch.where(flip.view(-1, 1), visible[:, partners["ibug68"]], visible)
    return images, mp_points, points, visible


def landmark_loss(predicted, target, weight):
    per_point = F.smooth_l1_loss(predicted, target, reduction="none", beta=0.02).sum(2)
    return (per_point * weight).sum() / weight.sum().clamp(min=1.0)


def train_capture(config: TrainCaptureConfig, out_dir: Path, log=print) -> dict:
    from serep_engine.capture.real import build_pseudo_code_set, build_real_set, load_real_set
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.paths import cache_dir, weights_dir

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = pick_device(config.device)
    face_model = ICTModel.load()
    expression_model = ExpressionModel.from_pretrained("cpu", face_model)
    grams = region_grams(expression_model, face_model)
    gram = multirex_gram(grams).to(device)

    model_config = CaptureModelConfig(code_dim=expression_model.config.code_dim, input_size=config.input_size,
                                      widths=tuple(int(width) for width in config.widths.split(",")),
                                      use_image=config.use_image, use_landmarks=config.use_landmarks,
                                      spatial_features=config.spatial_features, region_patches=config.region_patches)
    synth_dir = Path(config.synth) if config.synth else cache_dir() / "capture-synth-v2"
    synth = load_synth(synth_dir, model_config.source_size, config.max_shards)
    crop_size = float(synth.pop("crop_size"))
    model_config.crop_size = int(crop_size)
    n_validation = min(config.validation_shards * 256, len(synth["code"]) // 5)
    validation = {k: v[-n_validation:] for k, v in synth.items()}
    synth = {k: v[:-n_validation] for k, v in synth.items()}
    real = load_real_set(build_real_set(face_model, int(crop_size), config.real_photos, config.real_clips, log=log))
    real["crops"] = _load_crops(real["crops"], model_config.source_size)
    pseudo = None
    if config.pseudo_weight > 0:
        labeller = Path(config.pseudo_from or config.init_from or weights_dir())
        pseudo = load_real_set(build_pseudo_code_set(face_model, labeller, int(crop_size), config.real_photos,
                                                     config.real_clips, log=log))
        pseudo["crops"] = _load_crops(pseudo["crops"], model_config.source_size)
        pseudo["landmarks"] = np.zeros((len(pseudo["code"]), 68, 2), np.float32)  # no landmark loss on them
        pseudo["landmark_weight"] = np.zeros((len(pseudo["code"]), 68), np.float32)
    loss_gram = (balanced_gram(grams, synth["code"]) / 0.04 if config.balanced_code_loss
                 else gram / 0.01).to(device)  # either way a zero prediction costs ~25 at the start
    log(json.dumps({"type": "data", "synth": len(synth["code"]), "validation": n_validation,
                    "real": len(real["crops"]), "pseudo": 0 if pseudo is None else len(pseudo["code"])}))

    net = CaptureNet(model_config).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    start_step, history = 0, []
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        net.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        start_step, history = int(checkpoint["step"]), json.loads(checkpoint["history"])
        rng = np.random.default_rng([config.seed, start_step])
        log(json.dumps({"type": "resumed", "step": start_step}))
    elif config.init_from:
        log(json.dumps({"type": "initialised", "from": config.init_from, "tensors": warm_start(net, config.init_from)}))
    net.set_mirror(code_mirror(expression_model, face_model), mediapipe_mirror(face_model), ibug68_mirror(face_model))
    partners = {"mediapipe": net.mirror_mediapipe.cpu(), "ibug68": net.mirror_ibug68.cpu()}
    mirror_code = net.mirror_code.cpu()
    generator = torch.Generator().manual_seed(config.seed + start_step)
    augment = Augment(generator, config.landmark_dropout if config.use_landmarks else 0.0)
    use_real = config.domain_weight > 0 or config.landmark_weight > 0

    def learning_rate(step):
        warmup = 200
        if step < warmup:
            return config.lr * (step + 1) / warmup
        return config.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(config.steps - warmup, 1)))

    running, counted = {}, 0
    for step in range(start_step, config.steps):
        net.train()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step)
        synth_index = rng.integers(len(synth["code"]), size=config.batch_synth)
        images, mp_points, points, visible = _batch(synth, synth_index, crop_size)
        true_code = torch.from_numpy(synth["code"][synth_index])
        n_synth = images.shape[0]
        if pseudo is not None:  # labelled samples first: synthetic, then pseudo-labelled real
            pseudo_index = rng.integers(len(pseudo["code"]), size=config.batch_pseudo)
            parts = _batch(pseudo, pseudo_index, crop_size)
            images, mp_points, points, visible = (torch.cat([a, b]) for a, b in
                                                  zip((images, mp_points, points, visible), parts))
            true_code = torch.cat([true_code, torch.from_numpy(pseudo["code"][pseudo_index])])
        n_labelled = len(true_code)
        if use_real:
            r_images, r_mp, r_points, r_weight = _batch(real, rng.integers(len(real["crops"]), size=config.batch_real),
                                                        crop_size)
            images, mp_points = torch.cat([images, r_images]), torch.cat([mp_points, r_mp])
            points, visible = torch.cat([points, r_points]), torch.cat([visible, r_weight])
        if config.mirror:
            flip = torch.rand(images.shape[0], generator=generator) < 0.5
            images, mp_points, points, visible = mirror_some(flip, partners, images, mp_points, points, visible,
                                                             crop_size)
            true_code = torch.where(flip[:n_labelled, None], true_code @ mirror_code, true_code)
        images, mp_points, points = augment(images, mp_points, points)
        progress = step / config.steps
        strength = config.domain_weight * (2 / (1 + math.exp(-10 * progress)) - 1)
        code, predicted_points, domain = net(images.to(device), mp_points.to(device), strength)
        error = code[:n_labelled] - true_code.to(device)
        code_loss = torch.einsum("bi,ij,bj->b", error[:n_synth], gram, error[:n_synth]).mean()  # MultiREX weighting
        lmk_loss = landmark_loss(predicted_points, points.to(device), visible.to(device))
        per_sample = torch.einsum("bi,ij,bj->b", error, loss_gram, error)
        loss = per_sample[:n_synth].mean() + config.landmark_weight * lmk_loss / 0.003
        pseudo_loss = per_sample[n_synth:].mean() if n_labelled > n_synth else torch.zeros((), device=device)
        loss = loss + config.pseudo_weight * pseudo_loss
        domain_loss = torch.zeros((), device=device)
        if config.domain_weight > 0:
            is_synth = torch.zeros(images.shape[0], device=device)
            is_synth[:n_synth] = 1
            domain_loss = F.binary_cross_entropy_with_logits(domain, is_synth)
            loss = loss + domain_loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        for name, value in (("code_mm", code_loss.sqrt() * 10), ("landmarks", lmk_loss), ("domain", domain_loss),
                            ("pseudo", pseudo_loss)):
            running[name] = running.get(name, 0.0) + float(value.detach())
        counted += 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            entry = {"step": step + 1, **{k: round(v / counted, 5) for k, v in running.items()},
                     "lr": round(learning_rate(step), 6), "seconds": round(time.perf_counter() - started, 1)}
            running, counted = {}, 0
            history.append(entry)
            log(json.dumps({"type": "train", **entry}))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            torch.save({"model": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step + 1,
                        "history": json.dumps(history)}, checkpoint_path)

    model = CaptureModel(net.cpu(), torch.device("cpu"))
    val = validate(model, validation, gram.cpu(), crop_size)
    summary = {"config": asdict(config), "validation": val, "history": history[-5:], "n_synth": len(synth["code"]),
               "n_real": len(real["crops"]), "n_pseudo": 0 if pseudo is None else len(pseudo["code"]),
               "device": str(device),               "seconds": round(time.perf_counter() - started, 1)}
    model.metadata = {"training": summary, "synth_set": str(synth_dir.name)}
    model.save(out_dir)
    return summary


def warm_start(net: CaptureNet, folder: str) -> int:
    """Copy the tensors of an earlier model that fit this one (same name and shape); returns how many."""
    earlier = CaptureModel.load(folder).net.state_dict()
    state = net.state_dict()
    fitting = {k: v for k, v in earlier.items() if k in state and state[k].shape == v.shape}
    net.load_state_dict(fitting, strict=False)
    return len(fitting)


@torch.no_grad()
def validate(model: CaptureModel, data: dict, gram: torch.Tensor, crop_size: float) -> dict:
    """Held-out synthetic shards: region-weighted decoded-mesh RMS error (mm) and landmark NME (inner 51,
    outer eye corners)."""
    model.net.eval()
    errors, nmes = [], []
    for start in range(0, len(data["code"]), 64):
        index = np.arange(start, min(start + 64, len(data["code"])))
        images, mp_points, points, _ = _batch(data, index, crop_size)
        code, predicted, _ = model.net(images, mp_points)
        error = code - torch.from_numpy(data["code"][index])
        errors.append(torch.einsum("bi,ij,bj->b", error, gram, error))
        nmes.append(nme_inner51(predicted.numpy(), points.numpy()))
    return {"code_rms_mm": round(float(torch.cat(errors).mean().sqrt()) * 10, 4),
            "nme_inner51": round(float(np.mean(np.concatenate(nmes))), 4)}


def config_from_args(args) -> TrainCaptureConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainCaptureConfig)
              if getattr(args, f.name, None) is not None}
    return TrainCaptureConfig(**values)
