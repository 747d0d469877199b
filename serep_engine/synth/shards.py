"""`serep synth`: sharded synthetic sets a training loop can stream.

Each shard is an `.npz` (no pickles) of `shard_size` samples: `jpeg` (all crops' JPEG bytes end to end)
with `jpeg_offsets` (n + 1,), and per-sample arrays `code`, `weights`, `identity`, `pose`, `landmarks`,
`visible`. Shards are independent (seeded by (seed, shard index)) and written by parallel workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import cv2
import numpy as np

from serep_engine.cache import write_atomically
from serep_engine.facemodel.ict import TRAIN_SEEDS

SINGLE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LP_NUM_THREADS")
SYNTH_IDENTITY_OFFSET = 100_000  # synthetic-set identities: training seeds, apart from the expression model's


_worker: dict = {}  # the generator each worker process builds once


def _start_worker(config, videos: list[Path], seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.synth.augment import VideoBackgrounds
    from serep_engine.synth.dataset import SynthGenerator

    face_model = ICTModel.load()
    backgrounds = VideoBackgrounds(videos, frames_per_video=3, size=config.render_size, seed=seed) if videos else None
    model = ExpressionModel.from_pretrained("cpu", face_model)
    _worker["generator"] = SynthGenerator(face_model, model, config, backgrounds)
    _worker["take_weights"] = take_expressions(face_model, config.takes)


def take_expressions(face_model, takes: tuple[str, ...]) -> np.ndarray:
    """(N, 53) ICT expression weights of every tracked frame of the takes: real timing's co-activations (how
    people blink, talk and smile one-sided) for the sampler to draw from."""
    from serep_engine.contract import read_take
    from serep_engine.facemodel.expressions import ict_weights

    rows = [read_take(path) for path in takes]
    arkit = [np.clip(take.weights[take.found], 0.0, 1.0) for take in rows]
    return ict_weights(face_model, np.concatenate(arkit)) if arkit else np.zeros((0, 53), np.float32)


def _write_shard(args) -> int:
    out, shard, count, seed = args
    generator = _worker["generator"]
    config, face_model = generator.config, generator.face_model
    rng = np.random.default_rng([seed, shard])
    samples = []
    for i in range(count):
        if i % config.samples_per_identity == 0:
            identity_index = SYNTH_IDENTITY_OFFSET + shard * 1000 + i // config.samples_per_identity
            scale = rng.uniform(*config.identity_scale)
            identity = generator.identity(face_model.identity_weights(TRAIN_SEEDS[identity_index], scale))
        take_weights = _worker["take_weights"]
        weights = None
        if len(take_weights) and rng.random() < config.take_share:
            weights = take_weights[rng.integers(len(take_weights))]
        samples.append(generator.render_sample(identity, rng, weights))
    arrays = {key: np.stack([s[key] for s in samples]) for key in samples[0] if key != "crop"}
    save_frames(Path(out) / f"shard_{shard:05d}.npz", [s["crop"] for s in samples], **arrays)
    return count


def save_frames(path: Path, frames: list[np.ndarray], **arrays) -> None:
    """RGB frames as JPEG bytes end to end (`jpeg`, `jpeg_offsets`) plus arrays, written atomically."""
    encoded = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].ravel()
               for f in frames]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
    write_atomically(path, lambda tmp: np.savez(tmp, jpeg=np.concatenate(encoded), jpeg_offsets=offsets, **arrays))


def load_frames(path: Path) -> dict:
    """The arrays of a file written by `save_frames`, with `frames` (n, H, W, 3) RGB uint8 decoded."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    jpeg, offsets = arrays.pop("jpeg"), arrays.pop("jpeg_offsets")
    arrays["frames"] = np.stack([cv2.cvtColor(cv2.imdecode(jpeg[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                                 for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    return arrays


def write_synthetic_set(n: int, out: Path, seed: int = 0, shard_size: int = 256, workers: int | None = None,
                        config=None, videos: list[Path] | None = None, log=print) -> dict:
    from serep_engine.synth.dataset import SynthConfig

    config = config or SynthConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.json"
    if manifest.exists():
        made = json.loads(manifest.read_text())
        made_with = (made["seed"], made["crop_size"], made.get("shard_size", shard_size))
        if made_with != (seed, config.crop_size, shard_size):
            raise ValueError(f"{out} holds a set made with seed {made['seed']}, crop size {made['crop_size']}, "
                             f"shard size {made.get('shard_size', shard_size)}; use those settings to extend it, "
                             f"or another folder")
    # Shards already in the folder are kept: a set is resumed, or extended by asking for a larger n.
    jobs = [(out, shard, min(shard_size, n - start), seed) for shard, start in enumerate(range(0, n, shard_size))
            if not (out / f"shard_{shard:05d}.npz").exists()]
    if not jobs:
        return {"n": 0, "shards": 0, "out": str(out), "note": "every shard already exists"}
    total = sum(job[2] for job in jobs)
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    started = time.perf_counter()
    written = 0
    # One thread per worker in every library (BLAS, OpenMP, llvmpipe): the workers already fill the cores.
    # The spawned workers read these at start-up, before any import could start its thread pool.
    single_threaded = {name: "1" for name in SINGLE_THREAD_VARIABLES}
    saved = {name: os.environ.get(name) for name in single_threaded}
    os.environ.update(single_threaded)
    try:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_start_worker, initargs=(config, videos or [], seed)) as pool:
            for count in pool.imap_unordered(_write_shard, jobs):
                written += count
                log(json.dumps({"type": "progress", "done": written, "total": total, "stage": "synth"}))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    seconds = time.perf_counter() - started
    summary = {"n": written, "shards": len(jobs), "seconds": round(seconds, 2),
               "samples_per_second": round(written / seconds, 2), "workers": workers, "out": str(out)}
    manifest.write_text(json.dumps({"n_total": n, "seed": seed, "crop_size": config.crop_size,
                                    "shard_size": shard_size, "last_run": summary}))
    return summary


def read_shard(path: Path) -> dict:
    """A shard's arrays plus `crops` (n, S, S, 3) RGB uint8, decoded."""
    arrays = load_frames(path)
    arrays["crops"] = arrays.pop("frames")
    return arrays
