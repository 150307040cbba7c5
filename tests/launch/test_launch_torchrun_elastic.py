"""launch/torchrun_elastic.sh: a worker killed with SIGKILL makes torchrun's elastic agent restart the group, and the
restarted ranks resume from the newest checkpoint by themselves and finish the run."""

import os
import random
import signal
import subprocess
import time

import pytest

from tests.engine.conftest import REPO, child_pids, free_port
from tests.launch.conftest import events, job_env, last_train_step

pytestmark = pytest.mark.slow


def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_checkpoint_to_the_end(train_config, tmp_path):
    # resume none (the default): the restart is recognised by TORCHELASTIC_RESTART_COUNT and continues its own folder.
    config = train_config(train={"max_steps": 20}, checkpoint={"every": 4, "resume": "none"})
    run_dir = tmp_path / "run"
    cmd = ["bash", "launch/torchrun_elastic.sh", "--procs", "2", "--max-restarts", "1",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--", "--config", str(config)]
    # The script execs torchrun: this pid is the elastic agent, the workers are its children.
    agent = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **job_env()}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not ((run_dir / "checkpoints" / "latest").exists() and last_train_step(run_dir) >= 6):
            assert agent.poll() is None, f"launcher exited early ({agent.returncode}):\n{agent.stdout.read()[-5000:]}"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.1)
        os.kill(random.choice(child_pids(agent.pid)), signal.SIGKILL)
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
