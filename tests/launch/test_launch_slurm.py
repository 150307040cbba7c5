"""The sbatch scripts in slurm/, unedited, on a real Slurm cluster started by the tests (CPU mode): one node with
2 processes, two emulated nodes, and preemption notices ending in a requeued job that resumes where it stopped."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.engine.conftest import REPO, final_digests
from tests.launch.conftest import events, job_env, last_train_step

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_DIR = REPO / "slurm"


def _submit(slurm, script: str, config: Path, *train_args: str, out_dir: Path, **env: str) -> int:
    return slurm.sbatch(SLURM_DIR / script, "--config", str(config), *train_args,
                        options=(f"--output={out_dir}/job-%j.out",), env=job_env(**env), cwd=REPO)


def _output(out_dir: Path, job: int) -> str:
    path = out_dir / f"job-{job}.out"
    return path.read_text(errors="replace")[-8000:] if path.exists() else "(no job output yet)"


def _wait_done(slurm, job: int, out_dir: Path, timeout: float = 400) -> dict:
    return slurm.wait_for_job(job, timeout=timeout, describe=lambda: _output(out_dir, job))


def _preempt_once_training(slurm, job: int, run_dir: Path, out_dir: Path) -> dict:
    """Sends the preemption notice as soon as the run has trained 2 steps; returns the job once it has ended."""
    deadline = time.time() + 300
    while last_train_step(run_dir) < 2:
        state = slurm.job(job)["JobState"]
        assert state in ("PENDING", "RUNNING") and time.time() < deadline, f"{state}\n{_output(out_dir, job)}"
        time.sleep(0.2)
    # What `#SBATCH --signal=B:USR1@300` does before the time limit, now.
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))
    return _wait_done(slurm, job, out_dir)


def _assert_resumed_where_it_stopped(run_dir: Path, max_steps: int) -> None:
    stop, final = events(run_dir, "stop")
    assert stop["exit_code"] == 75 and 2 <= stop["step"] < max_steps
    (resume,) = events(run_dir, "resume")
    assert resume["step"] == stop["step"]
    assert final["exit_code"] == 0 and last_train_step(run_dir) == max_steps


def test_1_node_script_trains_with_2_processes_to_the_end(slurm, train_config, tmp_path):
    config = train_config()
    run_dir = tmp_path / "run"

    job = _submit(slurm, "train_1node.sbatch", config, out_dir=tmp_path)
    info = _wait_done(slurm, job, tmp_path)

    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), _output(tmp_path, job)
    start = events(run_dir, "start")[0]
    assert (start["world_size"], start["backend"]) == (2, "ddp")
    assert last_train_step(run_dir) == 8
    assert json.loads((run_dir / "exit.json").read_text())["exit_code"] == 0
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"]  # the two ranks really trained one model together


def test_multinode_script_trains_as_one_job_over_2_nodes_and_the_notice_reaches_every_node(slurm, train_config,
                                                                                          tmp_path):
    # resume none (the default): the requeued job (SLURM_RESTART_COUNT=1) finds its own run folder by its job id.
    config = train_config(train={"max_steps": 40}, checkpoint={"resume": "none"})
    run_dir = tmp_path / "run"

    # One process per node: a world of 2 exists only if both nodes' launchers joined the rendezvous.
    job = _submit(slurm, "train_multinode.sbatch", config, out_dir=tmp_path, PROCS_PER_NODE="1")
    info = _preempt_once_training(slurm, job, run_dir, tmp_path)

    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), _output(tmp_path, job)
    assert info["NodeList"] == "n[1-2]"
    for node in ("n1", "n2"):
        log = (slurm.folder / "log" / f"slurmd-{node}.log").read_text()
        assert f"launch task StepId={job}.0" in log, f"{node} ran no task of the training step"
    assert {(e["world_size"], e["backend"]) for e in events(run_dir, "start")} == {(2, "ddp")}
    # srun passed the notice to both nodes: both ranks stopped at the same step, and the requeued job resumed there.
    _assert_resumed_where_it_stopped(run_dir, 40)
    digests = final_digests(run_dir)
    assert digests[0]["model"] == digests[1]["model"]


def test_preemption_notice_checkpoints_requeues_and_the_requeued_job_resumes_at_that_step(slurm, train_config, tmp_path):
    # 60 steps: enough that the notice lands long before the end even on an idle machine, short enough to finish.
    config = train_config(train={"max_steps": 60}, wandb={"enabled": True}, checkpoint={"resume": "none"})
    run_dir = tmp_path / "run"
    job = _submit(slurm, "train_1node.sbatch", config, out_dir=tmp_path, WANDB_MODE="offline")

    info = _preempt_once_training(slurm, job, run_dir, tmp_path)

    output = _output(tmp_path, job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), output
    _assert_resumed_where_it_stopped(run_dir, 60)
    # --open-mode=append: the log holds both runs of the job.
    assert "restart 0 on" in output and "restart 1 on" in output
    # The requeued job logs to the same W&B run (offline: one folder per process, all with the run's id).
    folders = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and len({p.name.rsplit("-", 1)[1] for p in folders}) == 1


def test_ci_prereqs_is_a_quick_no_op_once_slurm_is_installed(slurm):
    started = time.time()
    result = subprocess.run(["bash", "launch/ci_prereqs.sh"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stderr
    assert time.time() - started < 5  # no apt-get run: CI pays for the install once
