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
