"""The `serep` command line (also `python -m serep_engine`).

Results and summaries are JSON on stdout (the last line is the machine-readable one); logs go to stderr.
Bad input exits non-zero with a one-line message on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_train_expression(args) -> dict:
    from serep_engine.expression.train import config_from_args, train_expression

    config = config_from_args(args)
    result = train_expression(config, out_dir=args.out, log=_log)
    return result["summary"]


def cmd_eval_expression(args) -> dict:
    from serep_engine.eval.expression import evaluate_expression
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel

    started = time.perf_counter()
    model = ExpressionModel.load(args.weights) if args.weights else ExpressionModel.from_pretrained("cpu")
    result = evaluate_expression(model, ICTModel.load(args.ict), args.identities, args.expressions, args.figure)
    result["seconds"] = round(time.perf_counter() - started, 2)
    if args.figure:
        _log(f"figure written to {args.figure}")
    return result


def cmd_train_capture(args) -> dict:
    from serep_engine.capture.train import config_from_args, train_capture

    out = args.out or Path("capture_model")
    return train_capture(config_from_args(args), out, log=_log)


def load_target(path: Path):
    """A target mesh from an .npz (vertices, faces) or any mesh file trimesh reads (.obj, .ply, .stl, .glb)."""
    from serep_engine.engine import TargetMesh

    if not path.exists():
        raise FileNotFoundError(f"target mesh not found: {path}")
    if path.suffix.lower() == ".npz":
        return TargetMesh.load(path)
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    if len(mesh.faces) == 0:
        raise ValueError(f"the target {path} has no faces")
    return TargetMesh(np.asarray(mesh.vertices), np.asarray(mesh.faces))


def cmd_capture(args) -> dict:
    from serep_engine.capture.video import probe
    from serep_engine.engine import CaptureOptions, Engine

    probe(args.video)  # a clip that cannot be read is said before the models load
    if args.out.suffix != ".npz":
        raise ValueError(f"the result file must end in .npz, got {args.out.name}")
    if not args.out.parent.exists():
        raise FileNotFoundError(f"the output folder does not exist: {args.out.parent}")
    target = load_target(args.target) if args.target else None
    engine = Engine.from_pretrained(args.device)
    options = CaptureOptions(smoothing=args.smoothing, gaps=args.gaps, arkit=args.arkit)
    started = time.perf_counter()

    def progress(done, total, stage, fps):
        _log(json.dumps({"type": "progress", "done": done, "total": total, "stage": stage, "fps": round(fps, 2)}))

    result = engine.capture(args.video, args.start, args.end, target, options, progress=progress)
    result.save(args.out)
    summary = {"result": str(args.out), "frames": result.n_frames, "face_found": int(result.face_found.sum()),
               "keys": len(result.basis), "vertices": int(result.basis.shape[1]), "device": str(engine.device),
               "seconds": round(time.perf_counter() - started, 2)}
    if args.preview:
        from serep_engine.capture.preview import write_preview

        registration = None
        if target is not None:
            from serep_engine.retarget import fit_target

            registration = fit_target(engine.face_model, target.vertices, target.triangles, target.landmarks)
        write_preview(args.video, result, args.preview, engine.face_model, engine.expression_model, target,
                      registration)
        summary["preview"] = str(args.preview)
    return summary


def cmd_eval_landmarks(args) -> dict:
    from serep_engine.capture.model import CaptureModel
    from serep_engine.eval.landmarks import evaluate_landmarks

    model = CaptureModel.load(args.weights) if args.weights else CaptureModel.from_pretrained("auto")
    result = evaluate_landmarks(model, args.data)
    _log(json.dumps(result))
    return {"nme_inner51": result["nme_inner51"], "n_images": result["n_images"]}


def cmd_eval_capture(args) -> dict:
    from serep_engine.eval.baselines import METHODS
    from serep_engine.eval.synthrex import evaluate_method
    from serep_engine.facemodel.ict import ICTModel

    face_model = ICTModel.load(args.ict)
    results = []
    for name in args.method:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        started = time.perf_counter()
        if name == "serep":
            from serep_engine.capture.model import CaptureModel

            capture_model = CaptureModel.load(args.weights) if args.weights else None
            method = METHODS[name](face_model, capture_model, mirror_average=not args.no_mirror)
        else:
            method = METHODS[name](face_model)
        result = evaluate_method(face_model, name, method, args.subjects, args.frames, log=_log)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        _log(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}))
    if args.figure:
        from serep_engine.eval.figures import capture_figure

        capture_figure(face_model, results, args.figure)
        _log(f"figure written to {args.figure}")
    return {k: v for k, v in results[-1].items() if not k.startswith("_")}


def cmd_synthrex(args) -> dict:
    from serep_engine.eval.synthrex import N_SUBJECTS, generate
    from serep_engine.facemodel.ict import ICTModel

    started = time.perf_counter()
    out = generate(ICTModel.load(args.ict), N_SUBJECTS, log=_log)
    return {"synthrex": str(out), "seconds": round(time.perf_counter() - started, 1)}


def cmd_regions(args) -> dict:
    from serep_engine.facemodel.ict import ICTModel
    from serep_engine.facemodel.regions import draw_regions, region_masks

    model = ICTModel.load(args.ict)
    draw_regions(model, args.figure)
    return {"figure": str(args.figure), "vertices": {k: int(v.sum()) for k, v in region_masks(model).items()}}


def cmd_synth(args) -> dict:
    from serep_engine.facemodel.ict import default_data_dir
    from serep_engine.synth.dataset import SynthConfig
    from serep_engine.synth.shards import write_synthetic_set

    videos = sorted((default_data_dir() / "real" / "videos").glob("*.mp4")) if not args.no_video_backgrounds else []
    config = SynthConfig(crop_size=args.size)
    return write_synthetic_set(args.n, args.out, seed=args.seed, shard_size=args.shard_size, workers=args.workers,
                               config=config, videos=videos, log=_log)


def _boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def cmd_worker(args) -> None:
    """The add-on's background process: JSON lines on stdout (serep_engine/worker.py), its own exit status."""
    from serep_engine.worker import main as worker_main

    raise SystemExit(worker_main(str(args.job)))


def cmd_eval_retarget(args) -> dict:
    from serep_engine.eval.retarget import evaluate_retarget
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel

    face_model = ICTModel.load(args.ict)
    model = ExpressionModel.from_pretrained("cpu", face_model)
    result = evaluate_retarget(face_model, model, args.expressions, args.figure, log=_log)
    if args.figure:
        _log(f"figure written to {args.figure}")
    return result


def cmd_export(args) -> dict:
    from serep_engine.retarget.export import export_result

    return export_result(args.result, livelink=args.livelink, json_path=args.json)


def cmd_bench(args) -> dict:
    from serep_engine.bench import run_bench

    return run_bench(args.device, args.clip_720p, args.clip_1080p, args.repeats, args.frames, args.weights,
                     bake=not args.no_bake, track_workers=args.track_workers, log=_log)


VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")


def cmd_batch(args) -> dict:
    """Bake many clips with Dask (serep_engine/distributed.py): one worker job per clip; one JSON line per clip
    on stderr, the summary on stdout."""
    from serep_engine.distributed import run_batch, write_jobs
    from serep_engine.job import JobOptions

    clips = []
    for path in args.clips:
        if path.is_dir():
            clips += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            clips.append(path)
        else:
            raise FileNotFoundError(f"clip or folder not found: {path}")
    if not clips:
        raise ValueError("no clips to bake (video files: " + ", ".join(VIDEO_SUFFIXES) + ")")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.target
    if target is not None and target.suffix.lower() != ".npz":  # jobs take .npz meshes: convert once, shared
        mesh = load_target(target)
        target = args.out / "jobs" / "target.npz"
        target.parent.mkdir(exist_ok=True)
        np.savez(target, vertices=mesh.vertices, faces=mesh.triangles)
    options = JobOptions(smoothing=args.smoothing, gaps=args.gaps, arkit=args.arkit)
    jobs = write_jobs(clips, args.out, target, options, args.device, args.start, args.end)
    started, outcomes = time.perf_counter(), []
    for outcome in run_batch(jobs, args.scheduler, args.workers, timeout=args.timeout):
        _log(json.dumps(outcome))
        outcomes.append(outcome)
    seconds = time.perf_counter() - started
    frames = sum(o["frames"] for o in outcomes if o["result"])
    return {"clips": len(outcomes), "done": sum(o["result"] is not None for o in outcomes),
            "failed": [{"job": o["job"], "error": o["error"]} for o in outcomes if o["result"] is None],
            "results": sorted(o["result"] for o in outcomes if o["result"]), "frames": frames,
            "seconds": round(seconds, 2), "fps": round(frames / seconds, 2) if seconds else 0.0,
            "hosts": sorted({o["host"] for o in outcomes})}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serep", description="SEREP engine: semantic facial expression capture")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model").add_subparsers(dest="what", required=True)
    expression = train.add_parser("expression", help="train the semantic expression model (E_id, E_exp, D_mesh)")
    from serep_engine.expression.train import TrainConfig

    for name, default in TrainConfig.__dataclass_fields__.items():
        expression.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default.default), default=None,
                                help=f"(default {default.default})")
    expression.add_argument("--out", type=Path, default=None, help="folder to write the checkpoint to")
    expression.set_defaults(func=cmd_train_expression)

    evaluate = commands.add_parser("eval", help="evaluate a stage").add_subparsers(dest="what", required=True)
    ev = evaluate.add_parser("expression", help="the expression model on held-out identities (MultiREX regions)")
    ev.add_argument("--json", action="store_true", help="print only the JSON result")
    ev.add_argument("--weights", type=Path, default=None, help="checkpoint folder (default: the shipped one)")
    ev.add_argument("--figure", type=Path, default=None, help="write the retargeting figure (PNG)")
    ev.add_argument("--identities", type=int, default=12, help="held-out identities per group")
    ev.add_argument("--expressions", type=int, default=24, help="expressions per identity")
    ev.add_argument("--ict", type=Path, default=None, help="ICT-FaceKit .npz or checkout (default: shared data)")
    ev.set_defaults(func=cmd_eval_expression)

    synth = commands.add_parser("synth", help="render a sharded synthetic training set")
    synth.add_argument("--n", type=int, required=True, help="number of samples")
    synth.add_argument("--out", type=Path, required=True, help="output folder (shard_*.npz, manifest.json)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256, help="crop size in pixels")
    synth.add_argument("--shard-size", type=int, default=256)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    synth.add_argument("--no-video-backgrounds", action="store_true", help="procedural backgrounds only")
    synth.set_defaults(func=cmd_synth)

    capture = evaluate.add_parser("capture", help="capture methods on SynthREX (MultiREX protocol)")
    capture.add_argument("--method", action="append", required=True,
                         help="neutral | landmark_fit | serep (repeat to compare; the JSON line is the last one's)")
    capture.add_argument("--json", action="store_true", help="print only the JSON result")
    capture.add_argument("--figure", type=Path, default=None, help="bars per region and view, and a strip of frames")
    capture.add_argument("--subjects", type=int, default=8, help="subjects to evaluate (quick checks: fewer)")
    capture.add_argument("--frames", type=int, default=150, help="frames per video (quick checks: fewer)")
    capture.add_argument("--weights", type=Path, default=None, help="capture model folder (default: the shipped one)")
    capture.add_argument("--no-mirror", action="store_true", help="serep without averaging crops with their mirror")
    capture.add_argument("--ict", type=Path, default=None)
    capture.set_defaults(func=cmd_eval_capture)

    landmarks = evaluate.add_parser("landmarks", help="NME of the landmark head on annotated photos")
    landmarks.add_argument("--data", type=Path, required=True, help="folder of images + landmarks68.json")
    landmarks.add_argument("--json", action="store_true", help="print only the JSON result")
    landmarks.add_argument("--weights", type=Path, default=None, help="capture model folder (default: shipped)")
    landmarks.set_defaults(func=cmd_eval_landmarks)

    train_capture = train.add_parser("capture", help="train the capture model (E_img, H_exp, H_lmks, C_d)")
    from serep_engine.capture.train import TrainCaptureConfig

    for name, default in TrainCaptureConfig.__dataclass_fields__.items():
        kind = type(default.default)
        kind = _boolean if kind is bool else kind
        train_capture.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                                   help=f"(default {default.default!r})")
    train_capture.add_argument("--out", type=Path, default=None, help="folder for checkpoints and weights")
    train_capture.set_defaults(func=cmd_train_capture)

    cap = commands.add_parser("capture", help="capture a clip into a result file (.npz)")
    cap.add_argument("video", type=Path)
    cap.add_argument("--out", type=Path, required=True, help="result file (.npz)")
    cap.add_argument("--target", type=Path, default=None, help="target mesh (.npz vertices+faces, .obj, .ply, ...)")
    cap.add_argument("--preview", type=Path, default=None, help="write a side-by-side preview video (.mp4)")
    cap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    cap.add_argument("--start", type=int, default=0, help="first frame")
    cap.add_argument("--end", type=int, default=None, help="one past the last frame")
    cap.add_argument("--smoothing", type=float, default=1.0, help="code smoothing strength (0 = raw)")
    cap.add_argument("--gaps", default="hold", choices=("hold", "interpolate"), help="frames without a face")
    cap.add_argument("--arkit", action="store_true", help="also solve ARKit weights")
    cap.set_defaults(func=cmd_capture)

    synthrex = commands.add_parser("synthrex", help="generate (or find) the cached SynthREX benchmark set")
    synthrex.add_argument("--ict", type=Path, default=None)
    synthrex.set_defaults(func=cmd_synthrex)

    rt = evaluate.add_parser("retarget", help="fitting and transfer onto remeshed held-out heads (MultiREX regions)")
    rt.add_argument("--json", action="store_true", help="print only the JSON result")
    rt.add_argument("--figure", type=Path, default=None, help="landmarks, registration and a transferred expression")
    rt.add_argument("--expressions", type=int, default=12, help="test expressions per head")
    rt.add_argument("--ict", type=Path, default=None)
    rt.set_defaults(func=cmd_eval_retarget)

    export = commands.add_parser("export", help="a result's ARKit weights as a Live Link Face CSV and/or JSON")
    export.add_argument("result", type=Path, help="capture result (.npz) made with ARKit weights")
    export.add_argument("--livelink", type=Path, default=None, help="Live Link Face CSV to write")
    export.add_argument("--json", type=Path, default=None, help="JSON of per-frame weights to write")
    export.set_defaults(func=cmd_export)

    regions = commands.add_parser("regions", help="draw the evaluation regions on the template")
    regions.add_argument("--figure", type=Path, required=True)
    regions.add_argument("--ict", type=Path, default=None)
    regions.set_defaults(func=cmd_regions)

    bench = commands.add_parser("bench", help="speed and memory, stage by stage (serep_engine/bench.py)")
    bench.add_argument("--json", action="store_true", help="print only the JSON result")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    bench.add_argument("--clip-720p", type=Path, default=None, help="default: the shared data's obama.mp4")
    bench.add_argument("--clip-1080p", type=Path, default=None, help="default: the shared data's skarsgard.mp4")
    bench.add_argument("--repeats", type=int, default=3, help="timed end-to-end runs per clip (median)")
    bench.add_argument("--frames", type=int, default=None, help="only the first N frames of each clip")
    bench.add_argument("--weights", type=Path, default=None, help="capture model folder (default: the shipped one)")
    bench.add_argument("--no-bake", action="store_true", help="skip the Blender (bpy) bake benchmark")
    bench.add_argument("--track-workers", type=int, default=None,
                       help="processes decoding and tracking chunks in parallel (default: 1, the threaded "
                            "pipeline, on the CPU; half the cores with CUDA)")
    bench.set_defaults(func=cmd_bench)

    batch = commands.add_parser("batch", help="bake many clips on local processes or a Dask cluster (docs/distributed.md)")
    batch.add_argument("clips", type=Path, nargs="+", help="clips and/or folders of clips")
    batch.add_argument("--out", type=Path, required=True, help="folder for the results (<clip>.npz) and job files")
    batch.add_argument("--target", type=Path, default=None, help="target mesh (.npz vertices+faces, .obj, .ply, ...)")
    batch.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: local processes)")
    batch.add_argument("--workers", type=int, default=None, help="local processes (default: one per two cores)")
    batch.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    batch.add_argument("--start", type=int, default=0, help="first frame of every clip")
    batch.add_argument("--end", type=int, default=None, help="one past the last frame of every clip")
    batch.add_argument("--smoothing", type=float, default=1.0, help="code smoothing strength (0 = raw)")
    batch.add_argument("--gaps", default="hold", choices=("hold", "interpolate"), help="frames without a face")
    batch.add_argument("--arkit", action="store_true", help="also solve ARKit weights")
    batch.add_argument("--timeout", type=float, default=None, help="seconds one clip may take")
    batch.set_defaults(func=cmd_batch)

    worker = commands.add_parser("worker", help="run one capture job for the Blender add-on (JSON lines on stdout)")
    worker.add_argument("--job", type=Path, required=True, help="job file (JSON, see serep_engine/job.py)")
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        _log("serep: interrupted")
        return 130
    except Exception as error:  # one line for people, the traceback for --debug
        if args.debug:
            raise
        _log(f"serep: error: {error}")
        return 1
    if result is not None:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
