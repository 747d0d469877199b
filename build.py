#!/usr/bin/env python3
"""The one entry point of the project.

    python build.py setup   create .venv and install the engine, the add-on's test tools and Blender (bpy)
    python build.py test    set up if needed, then run the test suite
    python build.py demo    show the engine at work on its default input (writes PNGs under demo/)

Runs with any Python 3; the environment it builds uses Python 3.11 (Blender 4.2-5.0's).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".serep-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
TORCH = "torch==2.13.0"  # the CPU build; a CUDA machine brings its own torch


def run(*command, **kwargs) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, **kwargs)


def find_python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    for name in ("python3.11", "python3"):
        path = shutil.which(name)
        if path and subprocess.run([path, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 11))"]).returncode == 0:
            return path
    sys.exit("build.py: Python 3.11 is needed (Blender 4.2-5.0 embed 3.11)")


def requirements_fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()).hexdigest()


def ensure_system_gl() -> None:
    """The renderer needs an EGL driver (Mesa's llvmpipe on a CPU machine): install it where it is missing
    and this is a Debian machine we administer."""
    import ctypes.util

    if sys.platform != "linux" or ctypes.util.find_library("EGL"):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", "libegl1", "libgl1-mesa-dri", "libgbm1")
    else:
        print("build.py: no EGL library found; install Mesa's EGL (e.g. libegl1 libgl1-mesa-dri) to render")


def setup() -> None:
    ensure_system_gl()
    if STAMP.exists() and STAMP.read_text() == requirements_fingerprint():
        return
    if not PYTHON.exists():
        run(find_python311(), "-m", "venv", VENV)
    run(PYTHON, "-m", "pip", "install", TORCH)
    run(PYTHON, "-m", "pip", "install", "-c", "constraints.txt", "-e", ".[dev]")
    STAMP.write_text(requirements_fingerprint())


def test(extra: list[str]) -> int:
    setup()
    return subprocess.run([str(PYTHON), "-m", "pytest", *extra], cwd=ROOT).returncode


def demo() -> int:
    setup()
    out = ROOT / "demo"
    out.mkdir(exist_ok=True)
    commands = [
        ["regions", "--figure", out / "regions.png"],
        ["eval", "expression", "--figure", out / "retarget.png"],
    ]
    for command in commands:
        code = subprocess.run([str(PYTHON), "-m", "serep_engine", *map(str, command)], cwd=ROOT).returncode
        if code:
            return code
    print(f"demo: figures written to {out}")
    return 0


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("setup", "test", "demo"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    if command == "setup":
        setup()
        return 0
    if command == "test":
        return test(extra)
    return demo()


if __name__ == "__main__":
    sys.exit(main())
