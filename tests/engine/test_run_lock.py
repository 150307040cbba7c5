"""The run folder's lock: a live holder on this host is never taken over (even stopped), and a holder on another host
that is taken over is fenced: its commits fail and write nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import BIN, REPO, free_port, read_jsonl, run_in_own_session
from yolotr.checkpoint.manager import CheckpointManager, verify
from yolotr.checkpoint.run_lock import RunFolderBusy, RunFolderTakenOver, RunLock, process_start_time


def _lock_of(run_dir: Path, pid: int, *, host: str | None = None, started: int | None = None, age_s: float = 0,
             generation: int = 1) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "started": started, "job": None, "since": 0,
              "generation": generation}
    (run_dir / ".lock").write_text(json.dumps(holder))
    old = time.time() - age_s
    os.utime(run_dir / ".lock", (old, old))


@pytest.fixture
def stopped_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.time() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":  # the signal is async
        assert time.time() < deadline
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_a_stopped_holder_on_this_host_is_never_stale_however_old_its_heartbeat(tmp_path, stopped_process):
    pid = stopped_process.pid
    _lock_of(tmp_path, pid, started=process_start_time(pid), age_s=3600)

    with pytest.raises(RunFolderBusy) as refused:
        RunLock(tmp_path, job=None, restart=False, lease_s=60).acquire()

    message = str(refused.value)
    assert f"pid {pid} on {socket.gethostname()}" in message and "stopped" in message
    assert f"kill -CONT {pid}" in message
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == pid  # untouched


def test_a_holder_whose_pid_now_belongs_to_another_process_is_stale(tmp_path, stopped_process):
    pid = stopped_process.pid
    _lock_of(tmp_path, pid, started=process_start_time(pid) - 1)  # the pid's start time differs: reused

    lock = RunLock(tmp_path, job=None, restart=False)
    note = lock.acquire()
    try:
        assert f"pid {pid} is now another process" in note and "lock generation 2" in note
    finally:
        lock.release()


def _writer(tmp: Path) -> list[Path]:
    (tmp / "trainer.json").write_text("{}")
    return [tmp / "trainer.json"]


def _take_over_from_another_host(run_dir: Path) -> RunLock:
    """What a start on node-b does once node-a's lock has gone a lease untouched (node-a is paused, not gone)."""
    old = time.time() - 120
    os.utime(run_dir / ".lock", (old, old))
    other = RunLock(run_dir, job=None, restart=False, lease_s=60, host="node-b")
    note = other.acquire()
    assert "not touched for over 60 s" in note and "lock generation 2" in note
    return other


@pytest.mark.parametrize("when", ["before the save", "while the save is written"])
def test_a_holder_taken_over_from_another_host_fails_to_commit_and_writes_nothing(tmp_path, when):
    holder = RunLock(tmp_path, job=None, restart=False, lease_s=60, host="node-a")
    holder.acquire()
    manager = CheckpointManager(tmp_path, rank=0, world_size=1, keep_last=3, fence=holder.check_held)
    manager.save(10, write_rank_files=_writer, asynchronous=False)
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step-00000010"

    if when == "before the save":
        other = _take_over_from_another_host(tmp_path)
        with pytest.raises(RunFolderTakenOver) as fenced:
            manager.save(20, write_rank_files=_writer, asynchronous=True)
    else:
        manager.save(20, write_rank_files=_writer, asynchronous=True)
        manager.pending.thread.join()
        other = _take_over_from_another_host(tmp_path)
        with pytest.raises(RunFolderTakenOver) as fenced:
            manager.close()

    assert "taken over by node-b:" in str(fenced.value) and "lock generation 2" in str(fenced.value)
    assert [p.name for p in manager.committed()] == ["step-00000010"] and verify(ckpts / "step-00000010") is None
    assert (ckpts / "latest").read_text().strip() == "step-00000010"
    assert not (ckpts / "step-00000020").exists()
    holder.release()  # the fenced holder leaves the new holder's lock in place
    assert json.loads((tmp_path / ".lock").read_text())["host"] == "node-b"
    other.release()
    assert not (tmp_path / ".lock").exists()


def _train(config: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "yolotr", "train", "--config", str(config), *overrides]


def test_a_resume_while_the_job_is_stopped_is_refused_and_the_job_continues_with_clean_records(
        train_config, tmp_path, launched):
    """The reproduction: job A stopped (`kill -STOP`) at step 20, its heartbeat older than the lease; `--resume` of
    the same folder; `kill -CONT` A."""
    config = train_config(run={"lock_lease_s": 2.0}, train={"max_steps": 40}, checkpoint={"every": 10},
                          debug={"sample_ledger": True, "rank_digests": False})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = subprocess.Popen(_train(config), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    launched.append(first)
    run_dir = tmp_path / "run"
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "step-00000020").is_dir():
        assert first.poll() is None and time.time() < deadline, first.stderr.read()[-3000:]
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGSTOP)
    time.sleep(4)  # twice the lease: the lock's heartbeat is as old as that of a lost host

    second = run_in_own_session(_train(config, "--resume", str(run_dir)), env, 120)
    os.kill(first.pid, signal.SIGCONT)

    assert second.returncode == 2, second.stderr[-3000:]
    assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr and "stopped" in second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    records = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 40
    assert not [r for r in records if r.get("event") == "resume"]
    ledger = [(r["rank"], r["step"], r["key"]) for r in read_jsonl(run_dir / "ledger.jsonl")]
    assert len(ledger) == len(set(ledger)) and max(step for _, step, _ in ledger) == 40


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_running_job_whose_lock_another_host_took_over_stops_at_its_next_commit_without_writing(
        train_config, tmp_path, launched, ranks):
    # The step-20 commit waits 5 s before it lands: the takeover below comes before it, however loaded the machine.
    config = train_config(train={"max_steps": 40}, checkpoint={"every": 10}, debug={"rank_digests": False},
                          faults={"pause_checkpoint_write_s": 5.0, "pause_checkpoint_write_from_step": 20})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    launcher = [str(BIN / "torchrun"), f"--nproc-per-node={ranks}", f"--master-port={free_port()}", "-m", "yolotr",
                "train", "--config", str(config)] if ranks > 1 else _train(config)
    job = subprocess.Popen(launcher, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    launched.append(job)
    run_dir = tmp_path / "run"
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "step-00000010").is_dir():
        assert job.poll() is None and time.time() < deadline, job.stderr.read()[-3000:]
        time.sleep(0.02)
    # What a start on node-b leaves once it judged this job's host gone: its own lock, one generation on.
    taken = {"host": "node-b", "pid": 4242, "started": 1, "job": None, "since": time.time(), "generation": 2}
    (run_dir / ".lock.new").write_text(json.dumps(taken))
    os.replace(run_dir / ".lock.new", run_dir / ".lock")

    _, err = job.communicate(timeout=300)

    # torchrun turns a failed worker into its own exit 1 (a retry then meets the new holder's lock: exit 2).
    assert job.returncode == (2 if ranks == 1 else 1), err[-3000:]
    assert "no longer holds the run folder: it was taken over by node-b:4242 (lock generation 2)" in err
    if ranks == 1:
        assert "Traceback" not in err
    ckpts = run_dir / "checkpoints"
    # A save it began before the takeover may stay as step-00000020.tmp (never read; the holder's own save of that
    # step, or its next start, replaces it): removing it could delete the new holder's save of the same step.
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.endswith(".tmp")) == ["latest", "step-00000010"]
    assert (ckpts / "latest").read_text().strip() == "step-00000010"
    assert json.loads((run_dir / ".lock").read_text()) == taken  # the new holder's lock is left in place
    assert json.loads((run_dir / "exit.json").read_text())["state"] == "running"  # no end written over its run
    assert not (run_dir / "weights" / "last.safetensors").exists()
