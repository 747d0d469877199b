"""No network, ever: a whole capture (mediapipe's Face Landmarker included, whose library would post usage stats
to Google, see serep_engine/track/offline.py) makes no connection and sends nothing to any internet address.
Checked by tracing the process tree's network system calls with strace."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from serep_engine.paths import data_dir

CLIP = data_dir() / "real" / "videos" / "May_5s.mp4"
INTERNET_CALL = re.compile(r"(connect|sendto|sendmsg|sendmmsg)\(\d+, .*(AF_INET|sin_port|sin6_port)")


def network_calls(command: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    trace = tmp_path / "trace.txt"
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg,sendmmsg", "-o", str(trace),
                           *command], capture_output=True, text=True, timeout=600)
    return done, [line for line in trace.read_text().splitlines() if INTERNET_CALL.search(line)]


@pytest.fixture
def strace():
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (build.py setup installs it on Debian machines it administers)")


def test_the_trace_sees_a_connection(strace, tmp_path):
    """The check itself: an attempt to connect (to a closed local port) is seen."""
    done, calls = network_calls([sys.executable, "-c", "import socket; socket.socket().connect_ex(('127.0.0.1', 9))"],
                                tmp_path)
    assert done.returncode == 0 and calls, calls


def test_a_whole_capture_makes_no_network_connection(strace, tmp_path):
    if not CLIP.exists():
        pytest.skip(f"real clips not found at {CLIP.parent}")
    done, calls = network_calls([sys.executable, "-m", "serep_engine", "capture", str(CLIP), "--out",
                                 str(tmp_path / "take.npz"), "--arkit"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert calls == [], calls[:5]


def test_the_macos_library_is_neutralised_and_stays_validly_signed(tmp_path):
    """macOS loads only signed code: the Mach-O dylib of the extension's mediapipe wheel (macOS arm64) gets the
    dead URL and the hash of the page it changed, so that every page again matches its code directory."""
    import zipfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import build
    from serep_engine.track.offline import DEAD_URL, TELEMETRY_URL, pages_match

    version = build.pinned_versions("3.11")["mediapipe"]
    folder = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--platform", "macosx_11_0_arm64", "-d", str(folder), f"mediapipe=={version}"], check=True)
    (wheel,) = folder.glob("mediapipe-*.whl")
    library = "mediapipe/tasks/c/libmediapipe.dylib"
    with zipfile.ZipFile(wheel) as archive:
        original = archive.read(library)
    with zipfile.ZipFile(build.offline_mediapipe(wheel)) as archive:
        patched = archive.read(library)
    assert pages_match(original), "the page hashes are read wrongly: the shipped library must match them"
    assert TELEMETRY_URL in original and TELEMETRY_URL not in patched and DEAD_URL in patched
    assert pages_match(patched)
    tampered = bytearray(patched)
    tampered[patched.find(DEAD_URL)] = ord("y")
    assert not pages_match(bytes(tampered))
