import subprocess
import sys


def test_ruff_is_clean(repo_root):
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
