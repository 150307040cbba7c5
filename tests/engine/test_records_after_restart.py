"""A start that trains steps an earlier attempt already recorded supersedes those records first, with a checkpoint or
without one: metrics.jsonl holds each step once, in order, and the sample ledger each trained sample once. The
cases: a worker killed with kill -9 before the first checkpoint committed (launch/torchrun_elastic.sh restarts the
group from step 0), and a plain restart of a run that crashed with no checkpoint at all."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, check, child_pids, free_port, read_jsonl, run_train

pytestmark = pytest.mark.slow


def train_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def assert_each_step_and_sample_once(run_dir: Path, last_step: int) -> None:
    steps = train_steps(run_dir)
    assert steps == list(range(1, last_step + 1)), steps  # log_every=1: every step once, increasing
    lines = (run_dir / "ledger.jsonl").read_text().splitlines()
    doubled = [line for line, count in collections.Counter(lines).items() if count > 1]
    assert not doubled, f"{len(doubled)} ledger lines written twice, e.g. {doubled[0]}"
    assert sorted({json.loads(line)["step"] for line in lines}) == list(range(1, last_step + 1))


def last_step_so_far(run_dir: Path) -> int:
    """The newest train record of a live run (a line being written is not read)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    return max((json.loads(line).get("step", 0) for line in lines if line.endswith("\n")
                and '"kind": "train"' in line), default=0)


def rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).split(b"=", 1)[1])


def test_kill_9_of_rank_1_before_the_first_commit_leaves_each_step_and_sample_recorded_once(train_config, tmp_path):
    # The save of step 6 pauses before its commit, so rank 1 dies with no checkpoint committed: the restart trains
    # from step 0 again, over the steps the first attempt recorded.
    config = train_config(train={"max_steps": 10}, checkpoint={"every": 6, "resume": "none"},
                          debug={"sample_ledger": True},
                          faults={"pause_checkpoint_write_s": 8, "pause_checkpoint_write_from_step": 6})
    run_dir = tmp_path / "run"
    cmd = ["bash", "launch/torchrun_elastic.sh", "--procs", "2", "--max-restarts", "1",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--", "--config", str(config)]
    agent = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not ((run_dir / "checkpoints" / "step-00000006.tmp").is_dir() and last_step_so_far(run_dir) >= 7):
            assert agent.poll() is None, f"launcher exited early ({agent.returncode}):\n{agent.stdout.read()[-5000:]}"
            assert time.time() < deadline, "step 7 not reached after 300 s"
            time.sleep(0.05)
        assert not (run_dir / "checkpoints" / "latest").exists()  # killed before the first commit
        (torchrun,) = child_pids(agent.pid)
        os.kill(next(pid for pid in child_pids(torchrun) if rank_of(pid) == 1), signal.SIGKILL)
        out, _ = agent.communicate(timeout=400)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()

    assert agent.returncode == 0, out[-5000:]
    assert "restart 1 of 1" in out
    starts = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 0]  # each start recorded; the restart began at step 0
    assert_each_step_and_sample_once(run_dir, 10)
    superseded = [r["step"] for r in read_jsonl(run_dir / "metrics.superseded.jsonl") if r["kind"] == "train"]
    assert superseded[:7] == list(range(1, 8))  # the first attempt's records, kept aside


def test_a_restart_with_no_checkpoint_at_all_records_each_step_and_sample_once(train_config, tmp_path):
    config = train_config(train={"max_steps": 6}, checkpoint={"every": 1000}, debug={"sample_ledger": True})
    run_dir = tmp_path / "run"
    check(run_train(config, "faults.exit_at_step=4", launcher="single"), code=1)  # os._exit(1), as a crash
    assert not (run_dir / "checkpoints" / "latest").exists() and train_steps(run_dir) == [1, 2, 3, 4]

    check(run_train(config, launcher="single"))

    assert_each_step_and_sample_once(run_dir, 6)
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "start"] == [0, 0]
