"""`serep capture`, `serep import-takes`, `serep batch`, `serep export`, `serep worker`: clips and ARKit takes into
result files, and results out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from serep_engine.cli.common import add_capture_options, capture_options, load_target, report
from serep_engine.contract import TAKE_SUFFIXES, VIDEO_SUFFIXES, read_take


def capture(args) -> dict:
    from serep_engine.engine import CaptureOptions, Engine
    from serep_engine.track.video import probe

    video = probe(args.video)  # a clip that cannot be read is said before the models load
    if args.out.suffix != ".npz":
        raise ValueError(f"the result file must end in .npz, got {args.out.name}")
    if not args.out.parent.exists():
        raise FileNotFoundError(f"the output folder does not exist: {args.out.parent}")
    mesh = load_target(args.target) if args.target else None
    engine = Engine.from_pretrained(args.device)
    registration = None if mesh is None else engine.fit(mesh)
    started = time.perf_counter()

    def progress(done, total, stage, fps):
        report({"type": "progress", "done": done, "total": total, "stage": stage, "fps": round(fps, 2)})

    result = engine.capture(video, args.start, args.end, registration, CaptureOptions(**capture_options(args)),
                            progress=progress)
    result.save(args.out)
    summary = {"result": str(args.out), "frames": result.n_frames, "face_found": int(result.face_found.sum()),
               "keys": len(result.basis), "vertices": int(result.basis.shape[1]), "device": engine.device,
               "backend": engine.backend, "seconds": round(time.perf_counter() - started, 2)}
    if args.preview:
        from serep_engine.preview import write_preview

        write_preview(video, result, args.preview, engine.face_model, engine.expression_model, mesh, registration)
        summary["preview"] = str(args.preview)
    return summary


def import_takes(args) -> dict:
    """Live Link Face / ARKit takes into result files, as `capture` makes of clips: OUT.npz for one take, else a
    folder of <take>.npz."""
    from serep_engine.engine import CaptureOptions, Engine

    takes = [read_take(path) for path in args.takes]  # a file that is not a take is said before the models load
    if args.out.suffix == ".npz":
        if len(takes) > 1:
            raise ValueError(f"{len(takes)} takes need a folder for their results, not {args.out.name}")
        outs = [args.out]
    else:
        stems = [path.stem for path in args.takes]
        clashes = sorted({stem for stem in stems if stems.count(stem) > 1})
        if clashes:
            raise ValueError(f"several takes are named {', '.join(clashes)}: their results would overwrite each other")
        args.out.mkdir(parents=True, exist_ok=True)
        outs = [args.out / f"{stem}.npz" for stem in stems]
    if not outs[0].parent.exists():
        raise FileNotFoundError(f"the output folder does not exist: {outs[0].parent}")
    mesh = load_target(args.target) if args.target else None
    engine = Engine.from_pretrained("cpu")  # a take needs no capture model on a GPU
    registration = None if mesh is None else engine.fit(mesh)
    options = CaptureOptions(**capture_options(args))
    summaries = []
    for path, take, out in zip(args.takes, takes, outs, strict=True):
        started = time.perf_counter()
        result = engine.import_take(take, registration, options)
        result.save(out)
        summaries.append({"take": str(path), "result": str(out), "frames": result.n_frames, "fps": result.fps,
                          "lost": int((~result.face_found).sum()), "keys": len(result.basis),
                          "vertices": int(result.basis.shape[1]), "seconds": round(time.perf_counter() - started, 2)})
        report(summaries[-1])
    return {"takes": summaries}


def batch(args) -> dict:
    """Bake many clips with Dask (serep_engine/distributed.py): one worker job per clip; one JSON line per clip
    on stderr, the summary on stdout."""
    from serep_engine.contract import JobOptions
    from serep_engine.distributed import run_batch, write_jobs

    clips = []
    for path in args.clips:
        if path.is_dir():
            clips += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES + TAKE_SUFFIXES)
        elif path.is_file():
            clips.append(path)
        else:
            raise FileNotFoundError(f"clip or folder not found: {path}")
    if not clips:
        raise ValueError("no clips to bake (video files and takes: " + ", ".join(VIDEO_SUFFIXES + TAKE_SUFFIXES) + ")")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.target
    if target is not None and target.suffix.lower() != ".npz":  # jobs take .npz meshes: convert once, shared
        mesh = load_target(target)
        target = args.out / "jobs" / "target.npz"
        target.parent.mkdir(exist_ok=True)
        np.savez(target, vertices=mesh.vertices, faces=mesh.triangles)
    jobs = write_jobs(clips, args.out, target, JobOptions(**capture_options(args)), args.device, args.start, args.end)
    started, outcomes = time.perf_counter(), []
    for outcome in run_batch(jobs, args.scheduler, args.workers, timeout=args.timeout):
        report(outcome)
        outcomes.append(outcome)
    seconds = time.perf_counter() - started
    frames = sum(o["frames"] for o in outcomes if o["result"])
    return {"clips": len(outcomes), "done": sum(o["result"] is not None for o in outcomes),
            "failed": [{"job": o["job"], "error": o["error"]} for o in outcomes if o["result"] is None],
            "results": sorted(o["result"] for o in outcomes if o["result"]), "frames": frames,
            "seconds": round(seconds, 2), "fps": round(frames / seconds, 2) if seconds else 0.0,
            "hosts": sorted({o["host"] for o in outcomes})}


def export(args) -> dict:
    from serep_engine.retarget.export import export_result

    return export_result(args.result, livelink=args.livelink, json_path=args.json)


def worker(args) -> None:
    """The add-on's background process: JSON lines on stdout (serep_engine/worker.py), its own exit status."""
    from serep_engine.worker import main as worker_main

    raise SystemExit(worker_main(str(args.job)))


def register(commands) -> None:
    parser = commands.add_parser("capture", help="capture a clip into a result file (.npz)")
    parser.add_argument("video", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="result file (.npz)")
    parser.add_argument("--target", type=Path, default=None, help="target mesh (.npz vertices+faces, .obj, .ply, ...)")
    parser.add_argument("--preview", type=Path, default=None, help="write a side-by-side preview video (.mp4)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--start", type=int, default=0, help="first frame")
    parser.add_argument("--end", type=int, default=None, help="one past the last frame")
    add_capture_options(parser)
    parser.set_defaults(func=capture)

    parser = commands.add_parser("import-takes", help="Live Link Face / ARKit takes (.csv) into result files (.npz)")
    parser.add_argument("takes", type=Path, nargs="+", help="takes (.csv, as the Live Link Face app writes them)")
    parser.add_argument("--out", type=Path, required=True, help="result file (.npz) for one take, else a folder")
    parser.add_argument("--target", type=Path, default=None, help="target mesh (.npz vertices+faces, .obj, .ply, ...)")
    add_capture_options(parser)
    parser.set_defaults(func=import_takes)

    parser = commands.add_parser("batch", help="bake many clips on local processes or a Dask cluster "
                                               "(docs/distributed.md)")
    parser.add_argument("clips", type=Path, nargs="+", help="clips and/or folders of clips")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (<clip>.npz) and job files")
    parser.add_argument("--target", type=Path, default=None, help="target mesh (.npz vertices+faces, .obj, .ply, ...)")
    parser.add_argument("--scheduler", default=None, help="a Dask scheduler's address (default: local processes)")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: one per two cores)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--start", type=int, default=0, help="first frame of every clip")
    parser.add_argument("--end", type=int, default=None, help="one past the last frame of every clip")
    add_capture_options(parser)
    parser.add_argument("--timeout", type=float, default=None, help="seconds one clip may take")
    parser.set_defaults(func=batch)

    parser = commands.add_parser("export", help="a result's ARKit weights as a Live Link Face CSV and/or JSON")
    parser.add_argument("result", type=Path, help="capture result (.npz) made with ARKit weights")
    parser.add_argument("--livelink", type=Path, default=None, help="Live Link Face CSV to write")
    parser.add_argument("--json", type=Path, default=None, help="JSON of per-frame weights to write")
    parser.set_defaults(func=export)

    parser = commands.add_parser("worker", help="run one capture job for the Blender add-on (JSON lines on stdout)")
    parser.add_argument("--job", type=Path, required=True, help="job file (JSON, see serep_engine/contract/job.py)")
    parser.set_defaults(func=worker)
