"""`serep eval expression|capture|landmarks|retarget|real`: each stage measured (the region protocol on our renders
and test heads; `real`: on real faces)."""

from __future__ import annotations

import time
from pathlib import Path

from serep_engine.cli.common import add_json_flag, log, report


def eval_expression(args) -> dict:
    from serep_engine.eval.expression import evaluate_expression
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel

    started = time.perf_counter()
    model = ExpressionModel.load(args.weights) if args.weights else ExpressionModel.from_pretrained("cpu")
    result = evaluate_expression(model, ICTModel.load(args.ict), args.identities, args.expressions, args.figure)
    result["seconds"] = round(time.perf_counter() - started, 2)
    if args.figure:
        log(f"figure written to {args.figure}")
    return result


def eval_capture(args) -> dict:
    from serep_engine.eval.baselines import METHODS
    from serep_engine.eval.synthrex import evaluate_method
    from serep_engine.facemodel.ict import ICTModel

    face_model = ICTModel.load(args.ict)
    results = []
    for name in args.method:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        started = time.perf_counter()
        if name in ("serep", "serep_network"):
            from serep_engine.capture.model import CaptureModel

            capture_model = CaptureModel.load(args.weights) if args.weights else None
            method = METHODS[name](face_model, capture_model, mirror_average=not args.no_mirror)
        else:
            method = METHODS[name](face_model)
        result = evaluate_method(face_model, name, method, args.subjects, args.frames, log=log)
        result["seconds"] = round(time.perf_counter() - started, 1)
        results.append(result)
        report({k: v for k, v in result.items() if not k.startswith("_")})
    if args.figure:
        from serep_engine.eval.figures import capture_figure

        capture_figure(face_model, results, args.figure)
        log(f"figure written to {args.figure}")
    return {k: v for k, v in results[-1].items() if not k.startswith("_")}


def eval_landmarks(args) -> dict:
    from serep_engine.capture.model import CaptureModel
    from serep_engine.eval.landmarks import evaluate_landmarks

    model = CaptureModel.load(args.weights) if args.weights else CaptureModel.from_pretrained("auto")
    result = evaluate_landmarks(model, args.data)
    report(result)
    return {"nme_inner51": result["nme_inner51"], "n_images": result["n_images"],
            "landmark_head_nme": result["landmark_head_nme"]}


def eval_retarget(args) -> dict:
    from serep_engine.eval.retarget import evaluate_retarget
    from serep_engine.expression.model import ExpressionModel
    from serep_engine.facemodel.ict import ICTModel

    face_model = ICTModel.load(args.ict)
    model = ExpressionModel.from_pretrained("cpu", face_model)
    result = evaluate_retarget(face_model, model, args.expressions, args.figure, log=log)
    if args.figure:
        log(f"figure written to {args.figure}")
    return result


def eval_real(args) -> dict:
    from serep_engine.eval.real import evaluate_clips, evaluate_photos
    from serep_engine.eval.takes import evaluate_takes
    from serep_engine.facemodel.ict import ICTModel

    face_model = ICTModel.load(args.ict)
    photos = evaluate_photos(face_model, args.method, args.photos, log=log)
    clips = evaluate_clips(face_model, args.method, args.clips, args.clip_frames, log=log)
    takes = evaluate_takes(face_model, args.method, args.takes, log=log)
    methods = {}
    for name in args.method:
        methods[name] = {"photos": photos[name], "clips": clips[name], "takes": takes[name]}
        report({"method": name, **methods[name]})
    if args.figure:
        from serep_engine.eval.figures import real_figure

        real_figure(methods, args.figure)
        log(f"figure written to {args.figure}")
    return {"methods": methods}


def register(commands) -> None:
    evaluate = commands.add_parser("eval", help="evaluate a stage").add_subparsers(dest="what", required=True)

    ev = evaluate.add_parser("expression", help="the expression model on held-out identities (MultiREX regions)")
    add_json_flag(ev)
    ev.add_argument("--weights", type=Path, default=None, help="checkpoint folder (default: the shipped one)")
    ev.add_argument("--figure", type=Path, default=None, help="write the retargeting figure (PNG)")
    ev.add_argument("--identities", type=int, default=12, help="held-out identities per group")
    ev.add_argument("--expressions", type=int, default=24, help="expressions per identity")
    ev.add_argument("--ict", type=Path, default=None, help="ICT-FaceKit .npz or checkout (default: shared data)")
    ev.set_defaults(func=eval_expression)

    capture = evaluate.add_parser("capture", help="capture methods on SynthREX (MultiREX protocol)")
    capture.add_argument("--method", action="append", required=True,
                         help="neutral | landmark_fit | serep | serep_network (repeat to compare; the JSON line is the "
                              "last one's)")
    add_json_flag(capture)
    capture.add_argument("--figure", type=Path, default=None, help="bars per region and view, and a strip of frames")
    capture.add_argument("--subjects", type=int, default=8, help="subjects to evaluate (quick checks: fewer)")
    capture.add_argument("--frames", type=int, default=150, help="frames per video (quick checks: fewer)")
    capture.add_argument("--weights", type=Path, default=None, help="capture model folder (default: the shipped one)")
    capture.add_argument("--no-mirror", action="store_true", help="serep without averaging crops with their mirror")
    capture.add_argument("--ict", type=Path, default=None)
    capture.set_defaults(func=eval_capture)

    landmarks = evaluate.add_parser("landmarks", help="NME of a result's 68 landmarks (and of the landmark head) "
                                    "on annotated photos")
    landmarks.add_argument("--data", type=Path, required=True, help="folder of images + landmarks68.json")
    add_json_flag(landmarks)
    landmarks.add_argument("--weights", type=Path, default=None, help="capture model folder (default: shipped)")
    landmarks.set_defaults(func=eval_landmarks)

    retarget = evaluate.add_parser("retarget", help="fitting and transfer onto remeshed held-out heads")
    add_json_flag(retarget)
    retarget.add_argument("--figure", type=Path, default=None,
                          help="landmarks, registration and a transferred expression")
    retarget.add_argument("--expressions", type=int, default=12, help="test expressions per head")
    retarget.add_argument("--ict", type=Path, default=None)
    retarget.set_defaults(func=eval_retarget)

    real = evaluate.add_parser("real", help="capture methods on real faces: annotated photos, clips, ARKit takes")
    real.add_argument("--method", action="append", required=True,
                      help="neutral | landmark_fit | mediapipe_blendshapes | serep | serep_network (repeat to compare)")
    real.add_argument("--photos", type=Path, default=None,
                      help="folder of photos + landmarks68.json (default: ../shared/data/real/faces68/afw)")
    real.add_argument("--clips", type=Path, default=None, help="folder of clips (default: ../shared/data/real/videos)")
    real.add_argument("--clip-frames", type=int, default=150, help="frames from the start of each clip")
    real.add_argument("--takes", type=Path, default=None,
                      help="folder of Live Link Face takes (default: ../shared/data/real/arkit_takes)")
    real.add_argument("--figure", type=Path, default=None, help="write bars of every part's correlations (PNG)")
    add_json_flag(real)
    real.add_argument("--ict", type=Path, default=None)
    real.set_defaults(func=eval_real)
