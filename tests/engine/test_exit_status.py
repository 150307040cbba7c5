"""exit.json tells a script how the newest start of a run ended: a start marks it running, so a start that is
killed before it can write its end never leaves an earlier start's "completed" in place."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.engine.conftest import REPO, read_jsonl, run_train


def test_a_resumed_start_killed_with_kill_9_leaves_exit_json_running_not_the_old_completed(train_config, tmp_path,
                                                                                          launched):
    config = train_config(train={"max_steps": 4}, checkpoint={"every": 2})
    first = run_train(config, launcher="single")
    assert first.returncode == 0, first.stderr[-3000:]
    exit_file = tmp_path / "run" / "exit.json"
    assert json.loads(exit_file.read_text()) | {"reason": ""} == {"state": "ended", "exit_code": 0, "step": 4,
                                                                   "reason": ""}

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "yolotr", "train", "--config", str(config), "train.max_steps=400"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    launched.append(proc)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # past the old end: the resumed start is training
        steps = [r["step"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "train"]
        if steps and max(steps) > 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    status = json.loads(exit_file.read_text())
    assert status["state"] == "running" and status["exit_code"] is None, status
