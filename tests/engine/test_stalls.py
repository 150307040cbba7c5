"""A process that stops answering, on real runs: the checkpoint writer SIGSTOPped (the save's deadline names its pid),
one rank of two SIGSTOPped (the other rank's collective times out and names it). Both end with exit.json and a
retryable exit code, never a wait without end or a raw gloo traceback."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, read_jsonl
from tests.engine.test_preemption import _start, _train_step, _wait_for
from yolotr.distributed import collective_failure
from yolotr.engine.rank_heartbeat import stalled_ranks

pytestmark = pytest.mark.slow


def _processes(session: int, marker: bytes) -> list[int]:
    """Processes of a session whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                cmdline = (entry / "cmdline").read_bytes()
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session and marker in cmdline:
                    found.append(int(entry.name))
    return found


def _rank_pid(launcher: int, rank: int) -> int:
    from tests.engine.conftest import child_pids

    for pid in child_pids(launcher):
        with contextlib.suppress(OSError):
            if f"RANK={rank}".encode() in (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                return pid
    raise AssertionError(f"no rank {rank} under {launcher}")


def test_a_stopped_checkpoint_writer_is_named_and_the_run_stops_with_exit_json_within_the_deadline(
        train_config, tmp_path, launched):
    config = train_config(train={"max_steps": 400}, checkpoint={"every": 2, "writer_timeout_s": 5})
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "yolotr", "train", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    launched.append(proc)
    _wait_for(lambda: (run_dir / "checkpoints" / "latest").exists(), proc)
    writers = _processes(proc.pid, b"spawn_main")
    assert len(writers) == 1
    os.kill(writers[0], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        output = proc.communicate(timeout=120)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(writers[0], signal.SIGKILL)
    waited = time.monotonic() - stopped

    assert proc.returncode == 1, output[-3000:]  # retryable
    assert f"checkpoint writer pid {writers[0]} has not answered for 5 s (stopped?)" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert waited < 60  # the deadline, a save's steps, and the stop: not forever
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 1 and f"pid {writers[0]}" in status["reason"]
    assert not Path(f"/proc/{writers[0]}").exists() or b"Z" in Path(f"/proc/{writers[0]}/stat").read_bytes()[:80]


def test_a_stopped_rank_is_named_by_the_other_whose_collective_times_out_and_exit_json_says_so(
        train_config, tmp_path, launched):
    config = train_config(train={"max_steps": 400}, distributed={"timeout_s": 10})
    run_dir = tmp_path / "run"
    proc = _start(config)
    launched.append(proc)
    _wait_for(lambda: _train_step(run_dir) >= 3, proc)
    victim = _rank_pid(proc.pid, 1)
    os.kill(victim, signal.SIGSTOP)
    try:
        output = proc.communicate(timeout=180)[0]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)

    line = next((text for text in output.splitlines() if "timed out" in text and "[yolotr rank 0]" in text), None)
    assert line is not None, "\n".join(t for t in output.splitlines() if not t.startswith("[rank1]"))[-8000:]
    assert f"rank 1 (pid {victim} on " in line and "distributed.timeout_s=10" in line
    assert not [text for text in output.splitlines() if text.startswith("[rank0]") and "Traceback" in text], output
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 1 and f"rank 1 (pid {victim}" in status["reason"]
    assert [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_stalled_ranks_names_a_stale_heartbeat_first_and_else_a_rank_behind(tmp_path):
    beats = tmp_path / "heartbeats"
    beats.mkdir()
    for rank, (step, age) in enumerate([(12, 0), (11, 0), (12, 30)]):
        (beats / f"rank-{rank:05d}.json").write_text(json.dumps({"step": step, "time": 1000 - age, "pid": 100 + rank,
                                                                 "host": "node-a"}))
    assert stalled_ranks(tmp_path, 4, me=0, stale_after_s=3, now=1000) == [
        "rank 2 (pid 102 on node-a): no heartbeat for 30 s, at step 12", "rank 3 (no heartbeat file)"]
    (beats / "rank-00002.json").unlink()
    assert stalled_ranks(tmp_path, 2, me=0, stale_after_s=3, now=1000) == [
        "rank 1 (pid 101 on node-a): at step 11, behind step 12"]


@pytest.mark.parametrize("message, kind", [
    ("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 10000ms for recv operation", "timeout"),
    ("Got the following error when running the callback: RuntimeError: Application timeout caused pair closure\n\n"
     "At:\n  .../torch/distributed/algorithms/ddp_comm_hooks/default_hooks.py(31): <lambda>", "timeout"),
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1234", "lost"),
    ("CUDA out of memory", None),
])
def test_a_collective_failure_is_told_from_other_errors_also_when_ddp_s_comm_hook_reports_it(message, kind):
    assert collective_failure(RuntimeError(message)) == kind
