import os
from pathlib import Path

import pytest

from serep_engine.facemodel.ict import default_ict_path


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
