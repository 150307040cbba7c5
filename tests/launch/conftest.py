"""Fixtures for the launch tests: the engine's tiny training setup, a real Slurm cluster, and a runner for the
launcher scripts that never leaves a process behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The engine's tiny data, tiny model and config writer: a 2-rank run of 8 steps takes ~15 s.
from tests.engine.conftest import (  # noqa: F401
    read_jsonl,
    run_in_own_session,
    tiny_data,
    tiny_model,
    train_config,
)
from tests.launch.slurm_cluster import start_cluster, unavailable_reason

VENV = Path(sys.executable).parent.parent


def job_env(**extra: str) -> dict[str, str]:
    """Environment of a launched training: one thread per rank (2 shared cores), no W&B unless a test asks."""
    return {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "YOLOTR_VENV": str(VENV),
            **extra}


def run_script(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs a launcher script (stdout and stderr merged); on a timeout its whole group is killed."""
    return run_in_own_session(cmd, {**os.environ, **job_env(), **(env or {})}, timeout, merge_stderr=True)


def events(run_dir: Path, name: str) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == name]


def last_train_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((r["step"] for r in read_jsonl(path) if r["kind"] == "train"), default=0)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A two-node Slurm cluster (n1, n2; 2 CPUs each) on this machine, for the whole session."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}. CI must run the Slurm tests: .ci/run installs Slurm with launch/ci_prereqs.sh")
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
