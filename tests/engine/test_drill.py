"""`yolotr drill` on real torchrun jobs (2 CPU ranks): the small campaign of CI passes with every fault recovered and
the final state bitwise equal to the run with no faults; and its comparison, run on that campaign's own checkpoints,
finds a single differing value and names it (so a pass is not the comparison seeing nothing)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from tests.engine.conftest import run_in_own_session, write_train_config
from yolotr.drill.compare import Comparison, _compare_state, compare_checkpoints, read_state
from yolotr.drill.plan import ENDS_ATTEMPT, KINDS, first_fault_step

pytestmark = pytest.mark.slow

STEPS = 30


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, tiny_data, tiny_model):
    """One 10-fault campaign (every kind, once at least) over 30 steps, shared by the tests of this module."""
    work = tmp_path_factory.mktemp("drill")
    # The writer thread: a writer process per rank would be started again by each of the ~8 starts.
    config = write_train_config(work, tiny_data, tiny_model, debug={},
                                checkpoint={"every": 4, "keep_last": 3, "writer": "thread"})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = run_in_own_session([sys.executable, "-m", "yolotr", "drill", "--config", str(config), "--out",
                                 str(work / "drill"), "--faults", "10", "--seed", "0", "--steps", str(STEPS)], env, 900)
    return result, work / "drill"


def test_a_campaign_of_ten_faults_recovers_every_one_and_ends_bitwise_equal_to_the_run_without(campaign):
    result, out = campaign
    report = json.loads((out / "drill.json").read_text())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["verdict"] == "pass" and report["runs_lost"] == 0
    total = report["table"]["total"]
    assert total["injected"] == total["recovered"] == 10
    assert all(report["table"][kind]["injected"] >= 1 for kind in KINDS)  # every kind, once at least
    assert report["duplicated_steps"] == []  # each step recorded once in metrics.jsonl, across every restart
    assert report["ledger"]["lost"] == report["ledger"]["doubled"] == report["ledger"]["misplaced"] == 0
    assert report["ledger"]["samples"] == STEPS * 8  # every step's global batch, once
    assert report["state"]["equal"] and report["state"]["compared"] > 1000
    assert "verdict: PASS" in result.stdout and "total" in result.stdout
    # The faults really happened: the attempts ended as each fault makes them end, and some before any checkpoint.
    codes = [a["exit_code"] for a in report["attempts"]["faulted"]]
    ending = [f for f in report["faults"] if f["kind"] in ENDS_ATTEMPT]
    assert codes[-1] == 0 and len(codes) == len(ending) + 1
    assert codes.count(75) >= sum(f["kind"] == "sigterm" for f in ending)
    assert any(f["step"] is not None and f["step"] < first_fault_step(4) for f in report["faults"])


def test_the_comparison_names_one_value_changed_by_one_ulp_and_finds_an_earlier_checkpoint_different(campaign):
    _, out = campaign
    faulted = out / "faulted" / "run" / "checkpoints" / f"step-{STEPS:08d}"
    reference = out / "reference" / "run" / "checkpoints"
    assert compare_checkpoints(faulted, reference / f"step-{STEPS:08d}").equal

    # One value of one tensor, moved to the next float: exactly that tensor is named.
    ours, theirs = read_state(faulted), read_state(reference / f"step-{STEPS:08d}")
    name = next(n for n, v in sorted(theirs.items()) if n.startswith("model.") and isinstance(v, torch.Tensor)
                and v.is_floating_point() and v.numel() > 1)
    flat = theirs[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf"), dtype=flat.dtype))
    result = Comparison()
    _compare_state(ours, theirs, result)
    assert result.different == 1 and result.differences[0].startswith(f"{name}: 1 of ")

    # The reference's previous checkpoint: every trained tensor differs (the list keeps the first 20 names).
    behind = sorted(p for p in reference.iterdir() if p.name.startswith("step-") and p.name < faulted.name)[-1]
    result = compare_checkpoints(faulted, behind)
    trained = [n for n in theirs if n.startswith("model.") and "running_" not in n and "num_batches" not in n]
    assert result.different >= len(trained) and result.differences[0].startswith(("ema.", "model.", "optimizer."))
