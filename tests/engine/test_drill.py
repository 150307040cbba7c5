"""`yolotr drill` on real torchrun jobs (2 CPU ranks): the small campaign of CI passes with every fault recovered and
the final state bitwise equal to the run with no faults; and a drill whose reference differs fails, naming what."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.engine.conftest import run_in_own_session

pytestmark = pytest.mark.slow


def _drill(config, out, *args, timeout=900):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return run_in_own_session([sys.executable, "-m", "yolotr", "drill", "--config", str(config), "--out", str(out),
                               *args], env, timeout)


def _config(train_config, every):
    # The writer thread: a writer process per rank would be started again by each of the ~8 starts.
    return train_config(checkpoint={"every": every, "keep_last": 3, "writer": "thread"}, debug={})


def test_a_campaign_of_ten_faults_recovers_every_one_and_ends_bitwise_equal_to_the_run_without(
        train_config, tmp_path):
    result = _drill(_config(train_config, 4), tmp_path / "drill", "--faults", "10", "--seed", "0", "--steps", "30")

    report = json.loads((tmp_path / "drill" / "drill.json").read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["verdict"] == "pass" and report["runs_lost"] == 0
    total = report["table"]["total"]
    assert total["injected"] == total["recovered"] == 10
    assert all(report["table"][kind]["injected"] == 2 for kind in
               ("kill_rank", "kill_during_write", "sigterm", "corrupt_checkpoint", "nan"))
    assert report["ledger"]["lost"] == report["ledger"]["doubled"] == report["ledger"]["misplaced"] == 0
    assert report["ledger"]["samples"] == 30 * 8  # every step's global batch, once
    assert report["state"]["equal"] and report["state"]["compared"] > 1000
    assert "verdict: PASS" in result.stdout and "total" in result.stdout
    # The faults really happened: the attempts ended as each fault makes them end.
    codes = [a["exit_code"] for a in report["attempts"]["faulted"]]
    assert codes.count(75) == 2 and codes[-1] == 0 and len(codes) == 7


def test_a_reference_that_did_not_skip_the_nan_step_makes_the_drill_fail_and_name_the_tensors(train_config, tmp_path):
    # The one thing that differs: the reference trains the step where the faulted run met its NaN.
    result = _drill(_config(train_config, 2), tmp_path / "drill", "--faults", "1", "--kinds", "nan", "--steps", "8",
                    "--reference-override", "faults.skip_steps=[]")

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "drill" / "drill.json").read_text())
    assert report["verdict"] == "fail" and not report["state"]["equal"]
    assert report["ledger"]["ok"]  # the same samples at the same steps: only the update differs
    first = report["state"]["differences"][0]
    assert first.split(":")[0].startswith(("ema.", "model.", "optimizer."))
    assert "values differ" in first
    assert "verdict: FAIL: final state differs from the reference" in result.stdout
