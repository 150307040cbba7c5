"""launch/torchrun_elastic.sh: a worker killed with SIGKILL ends the attempt; the script starts the group again, which
resumes the run folder's newest checkpoint and finishes the run. What a retry cannot fix is not retried."""

import os
import random
import signal
import subprocess
import time

import pytest

from tests.engine.conftest import REPO, child_pids, free_port
from tests.launch.conftest import events, job_env, last_train_step, run_script
from yolotr.errors import RETRYABLE

pytestmark = pytest.mark.slow


def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_checkpoint_to_the_end(train_config, tmp_path):
    # resume none (the default): the script's restart resumes the folder the first attempt settled on.
    config = train_config(train={"max_steps": 20}, checkpoint={"every": 4, "resume": "none"})
    run_dir = tmp_path / "run"
    cmd = ["bash", "launch/torchrun_elastic.sh", "--procs", "2", "--max-restarts", "1",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--", "--config", str(config)]
    # The script runs torchrun (its child), whose children are the workers.
    agent = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **job_env()}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not ((run_dir / "checkpoints" / "latest").exists() and last_train_step(run_dir) >= 6):
            assert agent.poll() is None, f"launcher exited early ({agent.returncode}):\n{agent.stdout.read()[-5000:]}"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
        (torchrun,) = child_pids(agent.pid)
        os.kill(random.choice(child_pids(torchrun)), signal.SIGKILL)
        out, _ = agent.communicate(timeout=400)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()

    assert agent.returncode == 0, out[-5000:]
    (resume,) = events(run_dir, "resume")
    assert resume["step"] >= 4 and resume["step"] % 4 == 0  # the newest checkpoint before the kill
    assert last_train_step(run_dir) == 20
    assert events(run_dir, "stop")[-1]["exit_code"] == 0
    assert "restart 1 of 1" in out


def test_an_exit_a_retry_cannot_fix_is_not_retried(train_config, tmp_path):
    config = train_config(train={"max_steps": 4})
    result = run_script(["bash", "launch/torchrun_elastic.sh", "--procs", "2", "--max-restarts", "3",
                         "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--", "--config", str(config),
                         "train.epochs=-1"], timeout=180)

    assert result.returncode == 2, result.stdout[-3000:]  # the trainer's own code, not torchrun's 1
    assert "train.epochs" in result.stdout and "restart 1 of" not in result.stdout


def test_the_launchers_retry_exactly_the_exit_codes_the_trainer_calls_retryable():
    script = f"source {REPO}/launch/launcher_env.sh; for c in 0 1 2 3 4 5 69 74 75 130 137; do is_retryable $c && echo $c; done"
    result = subprocess.run(["bash", "-c", script], cwd=REPO, env={**os.environ, **job_env()}, capture_output=True,
                            text=True, check=True)

    retried = [int(code) for code in result.stdout.split()]
    assert retried == [*sorted(RETRYABLE), 137]  # 137: a launcher killed by SIGKILL counts as a crash
