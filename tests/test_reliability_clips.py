"""Reliability: the clips animators actually have. Broken files get a one-line reason (CLI, worker), odd but
valid ones (variable frame rate, rotation metadata, 4K with a small face, non-ASCII paths) are read right.

Test clips are cut from a real clip with OpenCV and edited at the MP4 box level (rotation matrix, frame
timestamps, codec, box order), so that each is exactly the case it names."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from serep_engine.contract.job import Job
from serep_engine.paths import data_dir
from serep_engine.track.frontend import front_end
from serep_engine.track.video import VideoError, probe, read_frames

SOURCE = data_dir() / "real" / "videos" / "May_5s.mp4"  # 512 x 512, 25 fps, one face
REPO = Path(__file__).resolve().parents[1]
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}
STBL = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


@pytest.fixture(scope="module")
def source_frames():
    """The first 30 frames of a real clip (BGR)."""
    if not SOURCE.exists():
        pytest.skip(f"real clips not found at {SOURCE.parent} (../shared/data beside the repository)")
    capture = cv2.VideoCapture(str(SOURCE))
    frames = [capture.read()[1] for _ in range(30)]
    capture.release()
    return frames


def write_clip(path: Path, frames, fps: float = 25.0, fourcc: str = "mp4v") -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# -- MP4 boxes: enough of ISO/IEC 14496-12 to edit what OpenCV's muxer writes (moov after mdat) ---------------
def parse(data: bytes) -> list:
    boxes, i = [], 0
    while i < len(data):
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + size]
        boxes.append([kind, parse(body) if kind in CONTAINERS else body])
        i += size
    return boxes


def build(boxes: list) -> bytes:
    out = b""
    for kind, body in boxes:
        payload = build(body) if isinstance(body, list) else body
        out += struct.pack(">I4s", len(payload) + 8, kind) + payload
    return out


def find(boxes: list, *path: bytes) -> list:
    item = next(item for item in boxes if item[0] == path[0])
    return item if len(path) == 1 else find(item[1], *path[1:])


def rotated_clip(path: Path, frames) -> Path:
    """A phone-style clip: frames stored turned 90 degrees clockwise, with the display matrix that turns them
    back (what a phone held upright writes)."""
    write_clip(path, [cv2.rotate(f, cv2.ROTATE_90_CLOCKWISE) for f in frames])
    boxes = parse(path.read_bytes())
    tkhd = find(boxes, b"moov", b"trak", b"tkhd")
    offset = 4 + (32 if tkhd[1][0] == 1 else 20) + 16  # version/flags, times/ids/duration, reserved/layer/volume
    tkhd[1] = tkhd[1][:offset] + struct.pack(">9i", 0, -0x10000, 0, 0x10000, 0, 0, 0, 0, 0x40000000) \
        + tkhd[1][offset + 36:]
    path.write_bytes(build(boxes))
    return path


def retimed_clip(path: Path, frames, deltas: list[int]) -> Path:
    """A variable frame rate clip: frame k lasts deltas[k] ticks of the track's timescale (12800 / s)."""
    write_clip(path, frames[:len(deltas)])
    boxes = parse(path.read_bytes())
    find(boxes, b"moov", b"trak")[1] = [b for b in find(boxes, b"moov", b"trak")[1] if b[0] != b"edts"]
    stts = find(boxes, *STBL, b"stts")
    stts[1] = struct.pack(">II", 0, len(deltas)) + b"".join(struct.pack(">II", 1, d) for d in deltas)
    mdhd = find(boxes, b"moov", b"trak", b"mdia", b"mdhd")
    assert mdhd[1][0] == 0 and struct.unpack(">I", mdhd[1][12:16])[0] == 12800
    mdhd[1] = mdhd[1][:16] + struct.pack(">I", sum(deltas)) + mdhd[1][20:]
    path.write_bytes(build(boxes))
    return path


def faststart(data: bytes) -> bytes:
    """The same MP4 with its index (moov) first, as streaming-friendly files have it; chunk offsets moved."""
    boxes = parse(data)
    moov = find(boxes, b"moov")
    stco = find(boxes, *STBL, b"stco")
    (count,) = struct.unpack(">I", stco[1][4:8])
    offsets = struct.unpack(f">{count}I", stco[1][8:8 + 4 * count])
    stco[1] = stco[1][:8] + struct.pack(f">{count}I", *(o + len(build([moov])) for o in offsets))
    boxes.remove(moov)
    boxes.insert(1, moov)
    return build(boxes)


def serep(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serep_engine", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def closest(frame: np.ndarray, candidates) -> int:
    return int(np.argmin([np.abs(frame.astype(np.float32) - c).mean() for c in candidates]))


# -- broken files ------------------------------------------------------------------------------------------
def broken_clips(tmp_path: Path, frames) -> dict[str, tuple[Path, str]]:
    """name -> (clip, what the message must say)."""
    clips = {"missing": (tmp_path / "gone.mp4", "clip not found")}
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(200_000))
    clips["random bytes"] = (noise, "cannot open noise.mp4 as a video")
    whole = write_clip(tmp_path / "whole.mp4", frames[:10]).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[:len(whole) // 2])  # the index (at the end) is cut off
    clips["truncated"] = (tmp_path / "truncated.mp4", "damaged or incomplete")
    writer = cv2.VideoWriter(str(tmp_path / "no_frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    writer.release()
    clips["zero frames"] = (tmp_path / "no_frames.mp4", "cannot open no_frames.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    clips["empty file"] = (tmp_path / "empty.mp4", "empty file")
    avi = write_clip(tmp_path / "mjpg.avi", frames[:5], fourcc="MJPG").read_bytes()
    (tmp_path / "codec.avi").write_bytes(avi.replace(b"MJPG", b"ZZZZ"))  # a codec no decoder knows
    clips["unsupported codec"] = (tmp_path / "codec.avi", "format this build cannot read")
    return clips


def test_broken_clips_are_refused_with_a_reason(tmp_path, source_frames):
    for name, (clip, message) in broken_clips(tmp_path, source_frames).items():
        with pytest.raises(VideoError, match=message):
            probe(clip)
        with pytest.raises(VideoError, match=message):
            next(read_frames(clip))


@pytest.mark.slow
def test_the_cli_says_one_line_and_writes_nothing_for_a_broken_clip(tmp_path, source_frames):
    for name, (clip, message) in broken_clips(tmp_path, source_frames).items():
        out = tmp_path / f"{name.replace(' ', '_')}.npz"
        run = serep("capture", clip, "--out", out)
        assert run.returncode == 1, (name, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("serep: error: ") and message in lines[0], (name, lines)
        assert "Traceback" not in run.stderr and run.stdout == "" and not out.exists()
    debug = serep("--debug", "capture", tmp_path / "noise.mp4", "--out", tmp_path / "r.npz")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "VideoError" in debug.stderr


@pytest.mark.slow
def test_the_worker_reports_a_broken_clip_as_one_error_line(tmp_path, source_frames):
    clips = broken_clips(tmp_path, source_frames)
    for name in ("random bytes", "truncated", "unsupported codec"):
        clip, message = clips[name]
        job = Job(clip=clip, output=tmp_path / "result.npz").save(tmp_path / "job.json")
        run = serep("worker", "--job", job)
        lines = [json.loads(line) for line in run.stdout.splitlines()]
        assert run.returncode == 1 and [m["type"] for m in lines] == ["error"], (name, run.stdout)
        assert message in lines[0]["message"] and not (tmp_path / "result.npz").exists()


def test_a_truncated_clip_with_its_index_first_reads_up_to_the_damage(tmp_path, source_frames):
    data = faststart(write_clip(tmp_path / "whole.mp4", source_frames[:20]).read_bytes())
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) * 6 // 10])
    info = probe(tmp_path / "cut.mp4")
    assert info.frame_count == 20  # the header still claims every frame
    frames = list(read_frames(tmp_path / "cut.mp4"))
    assert 5 <= len(frames) < 20 and [i for i, _ in frames] == list(range(len(frames)))
    first = cv2.cvtColor(frames[0][1], cv2.COLOR_RGB2BGR)
    assert closest(first, source_frames[:20]) == 0


# -- odd but valid clips -------------------------------------------------------------------------------------
def test_variable_frame_rate_is_put_on_the_clips_time_grid(tmp_path, source_frames):
    """Frames 0-14 at 25 fps, 15-29 at 10 fps (a phone slowing down in low light): the clip's average rate is
    14.3 fps, and grid frame i shows the source frame that starts nearest to time i / fps (ties to the later),
    so the animation keeps time with the clip, where reading frames one after the other drifts by 0.45 s."""
    deltas = [512] * 15 + [1280] * 15
    clip = retimed_clip(tmp_path / "vfr.mp4", source_frames, deltas)
    info = probe(clip)
    assert info.fps == pytest.approx(30 / 2.1) and info.frame_count == 30
    frames = list(read_frames(clip))
    starts = np.concatenate([[0], np.cumsum(deltas)[:-1]]) / 12800  # source frame k is shown from starts[k]
    slots = np.round(starts * info.fps)
    expected = [int(np.searchsorted(slots, i, side="right") - 1) for i in range(len(frames))]
    shown = [closest(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), source_frames) for _, rgb in frames]
    assert [i for i, _ in frames] == list(range(30)) and shown == expected
    grid = np.arange(30) / info.fps
    assert np.abs(starts[shown] - grid).max() <= 1 / info.fps  # on time within a frame
    assert np.abs(starts - grid).max() > 0.4  # what frame-after-frame reading would show
    assert shown[8] > 8 and len(set(shown[-12:])) < 12  # frames dropped where dense, held where sparse
    assert [i for i, _ in read_frames(clip, 12, 16)] == [12, 13, 14, 15]  # a range lands on the same grid
    assert closest(cv2.cvtColor(next(read_frames(clip, 12, 16))[1], cv2.COLOR_RGB2BGR), source_frames) == shown[12]


def test_rotation_metadata_gives_upright_frames_with_a_face(tmp_path, source_frames):
    upright = [f[100:484] for f in source_frames[:10]]  # 512 x 384, landscape
    clip = rotated_clip(tmp_path / "phone.mp4", upright)
    info = probe(clip)
    assert (info.width, info.height) == (512, 384)
    for index, rgb in read_frames(clip):
        assert np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.float32) - upright[index]).mean() < 6
    tracked = list(front_end(clip))
    assert len(tracked) == 10 and all(frame.found for frame in tracked)
    eyes = np.array([f.landmarks[[468, 473], 1].mean() for f in tracked])
    mouth = np.array([f.landmarks[[61, 291], 1].mean() for f in tracked])
    assert (eyes < mouth).all()  # eyes above the mouth: the face is upright


def test_4k_clip_with_a_small_face_is_tracked(tmp_path, source_frames):
    """A 4K frame with the actor small (a face about 120 px wide, 3% of the frame): mediapipe's detector
    misses it on the whole frame; the window search finds it, then follows it."""
    frames = []
    for frame in source_frames[:8]:
        big = np.full((2160, 3840, 3), 70, np.uint8)
        big[1300:1556, 2700:2956] = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
        frames.append(big)
    clip = write_clip(tmp_path / "wide.mp4", frames)
    info = probe(clip)
    assert (info.width, info.height) == (3840, 2160)
    tracked = list(front_end(clip, crop_size=256))
    assert len(tracked) == 8 and all(frame.found for frame in tracked)
    for frame in tracked:
        x, y = frame.landmarks[:, 0], frame.landmarks[:, 1]
        assert (x > 2700).all() and (x < 2956).all() and (y > 1300).all() and (y < 1556).all()
        assert frame.crop.shape == (256, 256, 3)


def test_non_ascii_and_spaces_in_paths(tmp_path, source_frames):
    folder = tmp_path / "Aufnahmen ä ñ" / "東京 take 1"
    folder.mkdir(parents=True)
    clip = write_clip(folder / "Szene – ü 1.mp4", source_frames[:6])
    assert probe(clip).frame_count == 6 and len(list(read_frames(clip))) == 6
    assert sum(frame.found for frame in front_end(clip)) == 6
    job = Job(clip=clip, output=folder / "Ergebnis ö.npz")
    assert Job.load(job.save(folder / "job ß.json")) == job
    (folder / "kaputt ß.mp4").write_bytes(b"\x00" * 1000)
    run = serep("capture", folder / "kaputt ß.mp4", "--out", folder / "r é.npz")
    assert run.returncode == 1 and "kaputt ß.mp4" in run.stderr and len(run.stderr.strip().splitlines()) == 1
