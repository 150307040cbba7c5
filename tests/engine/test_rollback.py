"""Escalation: K consecutive non-finite steps roll back to the last good snapshot, skip the data window, back the LR
off; more rollbacks than allowed stop the run with exit code 3 and a report."""

import json

import pytest

from tests.engine.conftest import check, final_digests, read_jsonl, run_train

pytestmark = pytest.mark.slow


def test_three_consecutive_nans_roll_back_skip_the_window_and_back_off_the_lr(train_config, tmp_path):
    config = train_config(
        train={"max_steps": 10, "lrf": 1.0},  # constant LR: any change is the back-off
        guard={"max_consecutive_skips": 3, "snapshot_every": 2, "lr_backoff": 0.5, "cooldown_steps": 3},
        faults={"nan_loss_at": [[0, 4], [0, 5], [0, 6]]},
    )
    check(run_train(config))
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    events = [r for r in records if r["kind"] == "event"]
    rollbacks = [e for e in events if e["event"] == "rollback"]
    assert len(rollbacks) == 1
    rollback = rollbacks[0]
    assert rollback["step"] == 6 and rollback["restored_step"] == 2
    assert rollback["skipped_window"] == [3, 6]
    assert rollback["lr_backoff"] == 0.5 and rollback["cooldown_until"] == 9
    assert [e["step"] for e in events if e["event"] == "skip"] == [4, 5, 6]

    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert max(train) == 10 and train[10]["rollbacks"] == 1 and train[10]["skipped_steps"] == 3
    base = train[2]["lr"][0]
    assert train[7]["lr"][0] == pytest.approx(base * 0.5)  # cool-down
    assert train[10]["lr"][0] == pytest.approx(base)  # back to normal after cooldown_until


def test_rollback_budget_exhausted_stops_with_exit_code_3(train_config, tmp_path):
    config = train_config(
        train={"max_steps": 20},
        guard={"max_consecutive_skips": 2, "snapshot_every": 2, "max_rollbacks": 1},
        faults={"nan_loss_at": [[1, s] for s in range(3, 21)]},
    )
    result = run_train(config)
    # torchrun reports any failed worker as 1; the workers' own code is in its report and in exit.json.
    check(result, code=1)
    assert "exitcode  : 3" in result.stderr
    assert json.loads((tmp_path / "run" / "exit.json").read_text())["exit_code"] == 3
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    stop = [r for r in records if r["kind"] == "event" and r["event"] == "stop"][-1]
    assert stop["exit_code"] == 3 and "after 1 rollback within" in stop["reason"]
    # max_rollbacks=1: one rollback is made; the next trouble stops the run instead of restoring again.
    assert len([r for r in records if r["kind"] == "event" and r["event"] == "rollback"]) == 1


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_a_rollback_restores_the_snapshot_exactly_on_every_rank(train_config, tmp_path, launcher):
    # Skipped steps leave the state untouched, so rolling back from step 4 to the snapshot of step 2 must end bitwise
    # where a run that merely skips steps 3 and 4 ends (no LR back-off, to keep the two schedules equal).
    guard = {"max_consecutive_skips": 2, "snapshot_every": 2, "lr_backoff": 1.0}
    reference = train_config(run={"dir": str(tmp_path / "reference")}, guard={**guard, "max_consecutive_skips": 100},
                             faults={"skip_steps": [3, 4]})
    check(run_train(reference, launcher=launcher))
    config = train_config(guard=guard, faults={"nan_loss_at": [[0, 3], [0, 4]]})
    check(run_train(config, launcher=launcher))

    [rollback] = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r.get("event") == "rollback"]
    assert rollback["restored_step"] == 2 and rollback["skipped_window"] == [3, 4]
    rolled_back, skipped = final_digests(tmp_path / "run"), final_digests(tmp_path / "reference")
    for rank in (0, 1):
        assert rolled_back[rank]["model"] == skipped[rank]["model"]
        assert rolled_back[rank]["optimizer"] == skipped[rank]["optimizer"]
        assert rolled_back[rank]["ema"] == skipped[rank]["ema"]
    assert rolled_back[0]["model"] == rolled_back[1]["model"]
