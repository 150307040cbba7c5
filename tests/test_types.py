"""The trainer's packages type-check with mypy, with zero errors: the Protocols at their seams (the step backend, the
checkpointed backend, the sample a plan needs) and every Optional are checked, not only written down. mypy because
it runs from the package registry with no service to start, follows the project's own pyproject section, and is
what the type hints of torch and numpy are written against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_engine_guard_checkpoint_and_data_type_check_with_zero_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=REPO,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Success: no issues found" in result.stdout
