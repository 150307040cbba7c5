"""A slow first conversion (or download) on one rank must not make the waiting ranks hit the process-group timeout
(yolov5#7481): `distributed.together` keeps them in short collectives. Real torchrun ranks, gloo, a 2 s timeout."""

import subprocess

import pytest

from tests.engine.conftest import BIN, REPO, free_port

pytestmark = pytest.mark.slow


def _launch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "torchrun"), "--nproc-per-node=2", f"--master-port={free_port()}",
                           str(REPO / "tests/engine/together_script.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=180)


def test_work_longer_than_the_timeout_on_one_rank_is_waited_for_together():
    result = _launch("--together")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0: value 0, sum 10" in result.stdout and "rank 1: value 10, sum 10" in result.stdout


def test_without_it_the_waiting_rank_times_out():  # the failure the helper exists for: the test above can fail
    result = _launch()
    assert result.returncode != 0 and "Timed out waiting" in result.stderr, result.stderr[-3000:]
