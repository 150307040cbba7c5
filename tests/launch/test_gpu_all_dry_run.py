"""benchmarks/gpu_all.sh, the one prepared GPU call, run dry on a CPU (DRY_RUN=1: every part, tiny) so that it cannot
rot between the calls a GPU is lent for: each part reaches its end and writes its files, at most eight, no folders
(what a device call brings back); without yolov5 its arms and part d are left out, saying so; a deadline reached
leaves what was done and says what was not run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine.conftest import REPO, run_in_own_session

SCRIPT = REPO / "benchmarks/gpu_all.sh"


def _run(out, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "YOLOV5_DIR"}
    environ |= {"DRY_RUN": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env}
    return run_in_own_session(["bash", str(SCRIPT), str(out)], environ, timeout=1500, merge_stderr=True)


@pytest.mark.slow
def test_the_dry_run_reaches_every_part_and_writes_its_files(tmp_path):
    out = tmp_path / "out"
    result = _run(out)
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 0, result.stdout[-6000:]

    for check in ("a sync_free: exit 0", "a resume: exit 0", "a fp16: exit 0", "a deepspeed: exit 0",
                  "b steps: exit 0", "b trainers: exit 0", "c fp16: exit 0"):
        assert check in summary
    for fact in ("sync_free ok compiled", "sync_free ok skip", "resume ok resume", "fp16 ok skip"):
        assert fact in summary
    assert "FAIL" not in summary
    steps = json.loads((out / "b_steps.json").read_text())["steps"]
    assert {(r["model"], r["path"]) for r in steps} == {("yolotr-n", "eager"), ("yolotr-n", "compiled")}
    arms = [json.loads(line) for line in (out / "c_fp16.jsonl").read_text().splitlines()]
    assert {(a["path"], a["lr_factor"]) for a in arms} == {(p, f) for p in ("fp16 + guard", "bf16 + guard")
                                                           for f in (1.0, 5.0)}
    assert all(a["nonfinite_weights"] == 0 for a in arms)
    assert "yolov5: left out" in summary and "d parity: not run, yolov5 is not present" in summary
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / name).is_file() for name in files)


def test_a_part_the_deadline_leaves_no_time_for_is_reported_not_run_and_fails_the_call(tmp_path):
    out = tmp_path / "out"
    result = _run(out, PARTS="c", DEADLINE_S="5")
    summary = (out / "summary.txt").read_text()
    assert result.returncode == 1
    assert "c fp16: not run, the deadline is reached" in summary and "-- part c ended" in summary
