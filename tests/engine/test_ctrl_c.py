"""Ctrl-C on real runs (one process, and two torchrun ranks): real SIGINTs, once and twice. One stops as a preemption
does (the ranks agree, a checkpoint, exit.json, the resume command), exit 130; a second stops at once, never leaving
a torn commit; `yolotr train --resume RUN` then completes with every sample trained exactly once."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, check, read_jsonl, run_in_own_session
from tests.engine.test_preemption import _start, _train_step, _wait_for
from yolotr.checkpoint.manager import verify

pytestmark = pytest.mark.slow

SAMPLES = 96  # tiny_data's train split


def _start_single(config, *overrides):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "yolotr", "train", "--config", str(config), *overrides], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _ctrl_c(proc) -> None:
    """What a terminal does: SIGINT to the foreground process group (the trainer and its helpers, or the launcher)."""
    os.killpg(proc.pid, signal.SIGINT)


def _resume_alone(run_dir: Path, *overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return run_in_own_session([sys.executable, "-m", "yolotr", "train", "--resume", str(run_dir), *overrides], env, 600)


def _assert_every_sample_once_per_epoch(run_dir: Path, epochs: int) -> None:
    ledger = read_jsonl(run_dir / "ledger.jsonl")
    per_epoch = Counter((row["epoch"], row["key"]) for row in ledger)
    assert max(per_epoch.values()) == 1, [k for k, n in per_epoch.items() if n > 1][:5]
    assert len(per_epoch) == epochs * SAMPLES


def _assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output and "terminate called" not in output, output[-5000:]


def test_one_ctrl_c_checkpoints_writes_exit_json_prints_the_resume_command_and_resume_run_alone_completes(
        train_config, tmp_path, launched):
    # With DataLoader workers (the default): the terminal's SIGINT reaches them too.
    config = train_config(train={"max_steps": 24, "num_workers": 2}, checkpoint={"every": 1000},
                          debug={"sample_ledger": True})
    run_dir = tmp_path / "run"
    proc = _start_single(config)
    launched.append(proc)
    _wait_for(lambda: _train_step(run_dir) >= 3, proc)
    _ctrl_c(proc)
    output = proc.communicate(timeout=240)[0]

    assert proc.returncode == 130, output[-3000:]
    _assert_no_traceback(output)
    assert "stopping after this step (Ctrl-C again to stop now)" in output
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 130 and "Ctrl-C" in status["reason"]
    stopped_at = status["step"]
    assert 3 <= stopped_at < 24
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == f"step-{stopped_at:08d}"
    assert verify(run_dir / "checkpoints" / f"step-{stopped_at:08d}") is None
    assert f"to continue: yolotr train --resume {run_dir}" in output

    # The printed command, with nothing else: the run's own config.yaml (its data, model, max_steps).
    resumed = _resume_alone(run_dir)
    check(resumed)
    resume = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"][-1]
    assert resume["step"] == stopped_at
    assert _train_step(run_dir) == 24
    _assert_every_sample_once_per_epoch(run_dir, epochs=2)  # 12 steps of 8 samples each


def test_resume_run_alone_applies_overrides_on_top_of_the_runs_config(train_config, tmp_path):
    config = train_config(train={"max_steps": 4}, checkpoint={"every": 2})
    run_dir = tmp_path / "run"
    check(run_in_own_session([sys.executable, "-m", "yolotr", "train", "--config", str(config)],
                             {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}, 600))
    check(_resume_alone(run_dir, "train.max_steps=6", "train.log_every=2"))
    saved = (run_dir / "config.yaml").read_text()
    assert "max_steps: 6" in saved and "log_every: 2" in saved
    assert _train_step(run_dir) == 6
    # An override a resume may not change is refused as for `--config X --resume RUN`: exit 2, the key named.
    refused = _resume_alone(run_dir, "train.max_steps=8", "train.optimizer=adamw")
    assert refused.returncode == 2 and "train.optimizer" in refused.stderr, refused.stderr[-2000:]


def test_a_second_ctrl_c_during_a_commit_stops_at_once_and_leaves_only_an_uncommitted_tmp(
        train_config, tmp_path, launched):
    # The commit of step 8 is held open (the test hook sleeps before its manifest): the stop's own save waits for
    # it, and the second Ctrl-C lands there.
    config = train_config(train={"max_steps": 24}, checkpoint={"every": 4}, debug={"sample_ledger": True})
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    proc = _start_single(config, "faults.pause_checkpoint_write_s=120", "faults.pause_checkpoint_write_from_step=8")
    launched.append(proc)
    _wait_for(lambda: (ckpts / "step-00000008.tmp" / "trainer.json").exists() and _train_step(run_dir) >= 9, proc)
    _ctrl_c(proc)
    time.sleep(1.5)
    started = time.monotonic()
    _ctrl_c(proc)
    output = proc.communicate(timeout=60)[0]

    assert proc.returncode == 130, output[-3000:]
    assert time.monotonic() - started < 20  # at once: not the 120 s the commit would take
    _assert_no_traceback(output)
    assert "stopping now (second Ctrl-C)" in output
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 130 and "second Ctrl-C" in status["reason"]
    assert (ckpts / "latest").read_text().strip() == "step-00000004"
    assert verify(ckpts / "step-00000004") is None
    assert not (ckpts / "step-00000008").exists() and (ckpts / "step-00000008.tmp").is_dir()
    assert not [p for p in _writers_left_behind(proc.pid)]  # the writer process did not outlive the trainer

    check(_resume_alone(run_dir, "faults.pause_checkpoint_write_s=0"))
    resume = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "resume"][-1]
    assert resume["step"] == 4
    assert not (ckpts / "step-00000008.tmp").exists()
    _assert_every_sample_once_per_epoch(run_dir, epochs=2)


def _writers_left_behind(pid: int) -> list[int]:
    """Processes still running whose parent was `pid`'s (children of the dead trainer are adopted by init): the
    writer, found by its command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                session = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
            except (OSError, ValueError, IndexError):
                continue
            if session == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
def test_ctrl_c_under_torchrun_stops_both_ranks_without_a_traceback(train_config, tmp_path, launched, presses):
    config = train_config(train={"max_steps": 400}, checkpoint={"every": 4}, debug={"sample_ledger": True})
    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    overrides = ("faults.pause_checkpoint_write_s=120", "faults.pause_checkpoint_write_from_step=8") * (presses - 1)
    proc = _start(config, *overrides)
    launched.append(proc)
    if presses == 1:
        _wait_for(lambda: _train_step(run_dir) >= 3, proc)
    else:
        _wait_for(lambda: (ckpts / "step-00000008.tmp" / "trainer.json").exists() and _train_step(run_dir) >= 9,
                  proc)
    _ctrl_c(proc)  # torchrun passes it on to each rank's process group
    if presses == 2:
        time.sleep(1.5)
        _ctrl_c(proc)
    output = proc.communicate(timeout=240)[0]

    # torchrun prints its own SignalException; the ranks print none (their lines start with [rankN]: when they do).
    assert not [line for line in output.splitlines() if line.startswith("[rank") and "Traceback" in line], output
    assert "terminate called" not in output and "Connection closed by peer" not in output, output[-5000:]
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 130, output[-3000:]
    if presses == 1:
        stopped_at = status["step"]
        saved = [d for d in read_jsonl(run_dir / "digests.jsonl") if d["tag"] == "checkpoint"]
        assert {d["rank"] for d in saved if d["step"] == stopped_at} == {0, 1}
        assert verify(ckpts / f"step-{stopped_at:08d}") is None
        assert "--resume" in output
    else:
        assert (ckpts / "latest").read_text().strip() == "step-00000004"
        assert not (ckpts / "step-00000008").exists()


def test_the_resume_command_is_the_launch_scripts_line_when_one_set_it_and_else_yolotr_train():
    from yolotr.checkpoint.run_status import resume_command

    assert resume_command("runs/my exp", env={}) == "yolotr train --resume 'runs/my exp'"
    launched_by_script = {"YOLOTR_LAUNCH_LINE": "launch/launch.sh --procs 2 --", "LOCAL_RANK": "0"}
    assert resume_command("runs/exp", env=launched_by_script) == "launch/launch.sh --procs 2 -- --resume runs/exp"


def test_one_ctrl_c_to_launch_sh_checkpoints_that_step_exits_130_and_is_not_retried(train_config, tmp_path, launched):
    # The terminal's SIGINT reaches the script and accelerate; the script's trap passes on a copy: one press still.
    from tests.launch.conftest import job_env

    config = train_config(train={"max_steps": 400}, checkpoint={"every": 1000})
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(["bash", "launch/launch.sh", "--procs", "2", "--max-restarts", "1", "--", "--config",
                             str(config)], cwd=REPO, env={**os.environ, **job_env()}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    launched.append(proc)
    _wait_for(lambda: _train_step(run_dir) >= 3, proc)
    _ctrl_c(proc)
    output = proc.communicate(timeout=300)[0]

    assert proc.returncode == 130, output[-5000:]
    assert not [line for line in output.splitlines() if line.startswith("[rank") and "Traceback" in line], output
    assert "restart 1 of" not in output
    status = json.loads((run_dir / "exit.json").read_text())
    assert status["exit_code"] == 130 and status["reason"] == "stopped by Ctrl-C; checkpoint written"
    assert verify(run_dir / "checkpoints" / f"step-{status['step']:08d}") is None
    assert f"to continue: launch/launch.sh --procs 2 --max-restarts 1 -- --resume {run_dir}" in output
