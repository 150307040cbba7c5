"""Keys implicated in repeated bad steps are quarantined (and skipped after a resume); a systemic failure does not
quarantine the whole dataset."""

import json

import pytest

from tests.engine.conftest import check, read_jsonl, run_train

pytestmark = pytest.mark.slow


def test_repeatedly_bad_samples_are_quarantined_but_never_more_than_the_cap(train_config, tmp_path):
    # NaN loss on rank 0 at every step of the second epoch: the same keys are bad twice only if the cap allows.
    config = train_config(
        train={"max_steps": 24},
        guard={"quarantine_after": 1, "max_consecutive_skips": 100, "max_quarantine_fraction": 0.1},
        faults={"nan_loss_at": [[0, s] for s in range(2, 25)]},
    )
    check(run_train(config, nproc=1, launcher="single"))
    run_dir = tmp_path / "run"
    events = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "event"]
    quarantined = json.loads((run_dir / "quarantine.json").read_text())
    assert len(quarantined) == 8  # the first bad batch; the next would pass 10% of 96 samples
    assert any(e["event"] == "quarantine_capped" for e in events)


def test_keys_quarantined_after_the_last_checkpoint_stay_quarantined_after_a_crash(train_config, tmp_path):
    # Checkpoint at step 2; step 3's batch is bad, its keys are quarantined (quarantine.json), then the run crashes.
    # The resumed run restarts at step 3 from a checkpoint that never heard of them: the run folder's list holds.
    config = train_config(
        checkpoint={"every": 2},
        guard={"quarantine_after": 1, "max_quarantine_fraction": 0.1},
        debug={"sample_ledger": True, "rank_digests": True},
    )
    crashed = run_train(config, "faults.nan_loss_at=[[0, 3]]", "faults.exit_at_step=3", nproc=1, launcher="single")
    assert crashed.returncode != 0
    run_dir = tmp_path / "run"
    quarantined = set(json.loads((run_dir / "quarantine.json").read_text()))
    assert len(quarantined) == 8  # step 3's batch

    check(run_train(config, nproc=1, launcher="single"))
    resumed = [line for line in read_jsonl(run_dir / "ledger.jsonl") if line["step"] > 2]
    assert resumed and not quarantined & {line["key"] for line in resumed}
    assert 3 not in {line["step"] for line in resumed}  # its whole batch is quarantined: an empty, skipped step
    train = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["quarantined"] == 8
