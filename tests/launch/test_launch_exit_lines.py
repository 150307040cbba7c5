"""A start yolotr refuses under a launcher ends with yolotr's one line and its exit code: no traceback per rank, no
ChildFailedError report from torch's elastic agent (launch/quiet_agent.py), while a crash keeps that report."""

import sys
from pathlib import Path

import pytest

from tests.engine.conftest import BIN, REPO, free_port
from tests.launch.conftest import run_script

AGENT = [sys.executable, str(REPO / "launch" / "quiet_agent.py")]


def _no_report(output: str) -> None:
    assert "Traceback" not in output and "ChildFailedError" not in output, output[-4000:]
    assert "failed (exitcode" not in output, output[-4000:]


def test_launch_sh_refuses_a_batch_the_world_size_cannot_split_once_before_any_run_folder(train_config, tmp_path):
    config = train_config()

    result = run_script(["bash", "launch/launch.sh", "--procs", "2", "--", "--config", str(config),
                         "train.batch_size=7"], timeout=120)

    assert result.returncode == 2, result.stdout[-4000:]
    _no_report(result.stdout)
    said = [line for line in result.stdout.splitlines() if "error:" in line]
    assert said == ["yolotr train: error: config key 'train.batch_size': 7 does not divide by the world size 2: every "
                    "rank must get the same number of images per step; use a multiple of 2"], result.stdout
    assert not (tmp_path / "run").exists()  # nor its exit.json: the start was refused before the run folder


def test_accelerate_launch_of_a_bad_key_ends_with_yolotrs_line_and_exit_2(train_config):
    config = train_config()

    result = run_script([*AGENT, "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
                         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                         str(free_port()), "-m", "yolotr", "train", "--config", str(config), "train.lr=0.1"],
                        env={"ACCELERATE_USE_CPU": "1"}, timeout=120)

    assert result.returncode == 2, result.stdout[-4000:]
    _no_report(result.stdout)
    assert result.stdout.count("yolotr train: error: config key 'train.lr'") == 1, result.stdout


@pytest.mark.parametrize("code, reported", [(2, False), (74, False), (1, True), (7, True)])
def test_the_agents_report_is_left_out_only_for_yolotrs_own_exit_codes(code, reported, tmp_path: Path):
    worker = tmp_path / "worker.py"
    worker.write_text(f"import sys\nprint('worker says why')\nsys.exit({code})\n")

    result = run_script([*AGENT, "torchrun", "--nproc-per-node", "2", f"--master-port={free_port()}", str(worker)],
                        timeout=60)

    assert "worker says why" in result.stdout
    if reported:  # a crash: torch's report and the launcher's own exit 1, as without the agent
        assert result.returncode == 1 and "ChildFailedError" in result.stdout, result.stdout[-4000:]
    else:
        assert result.returncode == code, result.stdout[-4000:]
        _no_report(result.stdout)


def test_the_agent_refuses_a_command_it_does_not_run():
    result = run_script([*AGENT, str(BIN / "python"), "-c", "pass"], timeout=30)
    assert result.returncode == 1 and "expected 'accelerate launch ...' or 'torchrun ...'" in result.stdout
