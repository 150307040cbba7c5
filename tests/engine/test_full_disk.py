"""A disk that fills up during training (a real 64 MB tmpfs, filled by `faults.fill_disk_after_step`): the run ends
with exit 74 on every path, exit.json says 74 and why in one line, stderr holds no traceback, and the checkpoints
before the failure stay intact. What fails while stopping (the plots, the weights export, W&B) is logged, one line
each, and never replaces the first error."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.data.test_conversion_storage import mount, mounts  # noqa: F401 - the tmpfs fixture
from tests.engine.conftest import free_port, read_jsonl, run_in_own_session, run_train
from yolotr.checkpoint.manager import verify

pytestmark = pytest.mark.slow


def small_disk(tmp_path: Path, mounts: list) -> Path:  # noqa: F811
    disk = tmp_path / "disk"
    mount(disk, "-t", "tmpfs", "-o", "size=64m", "tmpfs")
    mounts.append(disk)
    return disk / "run"


def train_onto(run_dir: Path, config: Path, *overrides: str):
    return run_train(config, f"run.dir={run_dir}", *overrides, launcher="single")


def train_onto_2_ranks(run_dir: Path, config: Path, *overrides: str):
    """Through launch/torchrun_elastic.sh, which exits with the trainer's code (exit.json): torchrun's own is 1 for
    any failed worker, with a traceback of its own."""
    cmd = ["bash", "launch/torchrun_elastic.sh", "--procs", "2", "--max-restarts", "1",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--", "--config", str(config), f"run.dir={run_dir}",
           *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = run_in_own_session(cmd, env, 600, merge_stderr=True)
    return subprocess.CompletedProcess(cmd, done.returncode, "", done.stdout)


def assert_exit_74_in_one_line(done, run_dir: Path, names: str) -> dict:
    assert done.returncode == 74, done.stderr[-5000:]
    assert not re.search(r'File ".*/yolotr/', done.stderr), done.stderr[-5000:]  # no traceback through yolotr
    if "torchrun" not in done.stderr:
        assert "Traceback" not in done.stderr, done.stderr[-5000:]
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 74 and status["state"] == "ended"
    assert "\n" not in status["reason"] and names in status["reason"], status["reason"]
    (last,) = [line for line in done.stderr.splitlines() if "stopped at step" in line]
    assert "exit 74" in last and names in last
    return status


def test_a_disk_full_after_step_6_ends_with_exit_74_and_exit_json_and_keeps_the_checkpoint_before(
        train_config, tmp_path, mounts):  # noqa: F811
    run_dir = small_disk(tmp_path, mounts)
    config = train_config(train={"max_steps": 12}, checkpoint={"every": 4}, debug={"sample_ledger": True})

    done = train_onto(run_dir, config, "faults.fill_disk_after_step=6")

    # The next save finds no room; the plots and last.safetensors at the stop fail too, each said in one line.
    status = assert_exit_74_in_one_line(done, run_dir, "no space left on device")
    assert status["step"] == 8
    assert "could not write" in done.stderr and "results.png" in done.stderr
    assert verify(run_dir / "checkpoints" / "step-00000004") is None
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000004"


def test_records_that_stop_fitting_stop_every_rank_at_the_next_step_with_exit_74(train_config, tmp_path, mounts):  # noqa: F811
    # No checkpoint is due after the fill: what meets the full disk first is a record (the ledger or metrics.jsonl,
    # once the last page each had allocated is full), on one rank or both; both ranks stop at the same step.
    run_dir = small_disk(tmp_path, mounts)
    config = train_config(train={"max_steps": 40, "epochs": 4}, checkpoint={"every": 4},
                          debug={"sample_ledger": True})

    done = train_onto_2_ranks(run_dir, config, "faults.fill_disk_after_step=4")

    status = assert_exit_74_in_one_line(done, run_dir, "writing")
    assert 4 < status["step"] < 40
    assert "restart 1 of" not in done.stderr  # 74 is not retried
    assert ("ledger.jsonl" in status["reason"] or "metrics.jsonl" in status["reason"]
            or "checkpoints" in status["reason"])
    assert verify(run_dir / "checkpoints" / "step-00000004") is None
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # what was written is kept, each step once


def test_a_disk_full_at_weights_last_safetensors_ends_with_exit_74_naming_it(train_config, tmp_path, mounts):  # noqa: F811
    # Filled after the last step's validation and checkpoint, leaving 1 MB: the records, the plot and exit.json
    # still fit, the weights file (about 5 MB) does not.
    run_dir = small_disk(tmp_path, mounts)
    config = train_config(train={"max_steps": 8}, checkpoint={"every": 4})

    done = train_onto(run_dir, config, "faults.fill_disk_after_step=8", f"faults.fill_disk_leave_bytes={1 << 20}")

    status = assert_exit_74_in_one_line(done, run_dir, "weights/last.safetensors")
    assert status["step"] == 8
    assert not (run_dir / "weights" / "last.safetensors").exists()
    assert not list((run_dir / "weights").glob(".*.tmp"))  # the cut file is removed: it would hold the space
    stop = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "stop"]
    assert stop[-1]["exit_code"] == 74
    assert verify(run_dir / "checkpoints" / "step-00000008") is None
