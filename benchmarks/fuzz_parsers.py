"""Longer fuzzing of what SEREP reads from files: the job file, the result file and the video front end.

Runs the hypothesis properties of tests/test_reliability_parsers.py (which run a bounded number of examples in
the test suite) with many more examples, and prints one JSON line per property and a summary:

    python benchmarks/fuzz_parsers.py [--examples 2000] [--video-examples 300] [--seed 0]

A property that fails prints hypothesis' smallest falsifying example and counts as a finding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from hypothesis import seed

REPO = Path(__file__).resolve().parents[1]


def load_properties():
    spec = importlib.util.spec_from_file_location("reliability_parsers", REPO / "tests" / "test_reliability_parsers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per job / result property")
    parser.add_argument("--video-examples", type=int, default=300, help="examples of damaged clips")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ["SEREP_FUZZ_EXAMPLES"], os.environ["SEREP_FUZZ_VIDEO_EXAMPLES"] = str(args.examples), \
        str(args.video_examples)
    props = load_properties()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        job_folder = scratch / "job"
        job_folder.mkdir()
        (job_folder / "take.mp4").write_bytes(b"the worker probes the clip itself")
        np.savez(job_folder / "head.npz", vertices=np.zeros((3, 3)), faces=np.zeros((1, 3), np.int32))
        cases = [
            ("job fields", props.test_fuzzed_job_fields_are_accepted_valid_or_refused_with_a_job_error,
             {"job_folder": job_folder}, args.examples),
            ("job file bytes", props.test_fuzzed_job_file_bytes_are_refused_with_a_job_error,
             {"job_folder": job_folder}, args.examples),
            ("result arrays", props.test_fuzzed_result_arrays_load_valid_or_are_refused,
             {"tmp_path": scratch}, args.examples),
            ("result file bytes", props.test_fuzzed_result_file_bytes_are_refused_or_valid,
             {"tmp_path": scratch}, args.examples),
            ("damaged clips", props.test_fuzzed_clips_are_read_or_refused_with_a_video_error,
             {"tmp_path": scratch, "clip_bytes": props.CLIP.read_bytes()}, args.video_examples),
        ]
        findings = 0
        for name, prop, fixtures, examples in cases:
            started = time.perf_counter()
            try:
                seed(args.seed)(prop)(**fixtures)
                outcome = "no failure"
            except Exception:  # a finding: keep fuzzing the other properties
                findings += 1
                outcome = traceback.format_exc(limit=3)
            seconds = round(time.perf_counter() - started, 1)
            print(json.dumps({"property": name, "examples": examples, "seconds": seconds, "outcome": outcome}),
                  flush=True)
    print(json.dumps({"findings": findings}))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
