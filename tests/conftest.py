import importlib.util
import os
import sys
from pathlib import Path

import pytest

from serep_engine.facemodel.ict import default_ict_path


PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # 3.11: Blender 4.2-5.0's, 3.13: Blender 5.1-5.3's


def pytest_collection_modifyitems(items):
    """Tests of the installed extension are slow (the zip is built, with its wheels, once per session) and run in
    both Blenders' Pythons (`build.py test`: .venv, then .venv313 with `-m blender`)."""
    for item in items:
        if "extension_zip" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.blender)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Deformation-transfer results of the tests go to a throwaway cache unless SEREP_CACHE is set."""
    if "SEREP_CACHE" not in os.environ:
        os.environ["SEREP_CACHE"] = str(tmp_path_factory.mktemp("serep-cache"))
    yield


@pytest.fixture(scope="session")
def face_model():
    path = default_ict_path()
    if not path.exists():
        pytest.skip(f"ICT-FaceKit data not found at {path} (../shared/data beside the repository)")
    from serep_engine.facemodel.ict import ICTModel

    return ICTModel.load(path)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory, repo_root) -> Path:
    """The linux-x64 extension zip for this Python, built by `build.py extension` (wheels cached under wheels/)."""
    if sys.platform != "linux":
        pytest.skip("the extension test builds the linux-x64 zip")
    spec = importlib.util.spec_from_file_location("serep_build", repo_root / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    (zip_path,) = build.extension(["linux-x64"], [PYTHON], tmp_path_factory.mktemp("dist"))
    return zip_path


@pytest.fixture(scope="session")
def blender_extension(extension_zip, tmp_path_factory):
    """The add-on as an animator gets it: the extension zip installed and enabled in real Blender (the bpy
    module) with throwaway user folders. Returns the add-on's package."""
    if "bpy" not in sys.modules:  # Blender reads its user folders once, when the module is first imported
        os.environ["BLENDER_USER_RESOURCES"] = str(tmp_path_factory.mktemp("blender-user"))
    import bpy

    if not bpy.utils.user_resource("EXTENSIONS").startswith(os.environ.get("BLENDER_USER_RESOURCES", "\0")):
        pytest.skip("bpy was imported before the test could give it throwaway user folders")
    bpy.ops.extensions.package_install_files(repo="user_default", filepath=str(extension_zip), enable_on_install=True)
    return sys.modules["bl_ext.user_default.serep"]


@pytest.fixture
def addon(blender_extension):
    """The installed add-on in an empty scene."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    assert hasattr(bpy.types, "SEREP_PT_main"), "reading the home file must keep the extension enabled"
    return blender_extension


@pytest.fixture
def sample_head(addon, face_model):
    """Makes the active object a head of its own topology (decimated, in metres, Z up) from an ICT identity."""
    import importlib

    import bpy
    import numpy as np

    def make(identity: int):
        keep = np.isin(face_model.polygon_material, [0, 1, 4, 5, 6, 7])  # skin, back of the head, eyes
        vertices = face_model.identity_neutral(face_model.identity_weights(identity), face_only=False)
        sample = importlib.import_module(f"{addon.__name__}.sample")
        obj = sample.make_sample_head(vertices, face_model.polygons[keep])
        bpy.context.view_layer.objects.active = obj
        return obj

    return make
