"""Escalation: K consecutive non-finite steps roll back to the last good snapshot, skip the data window, back the LR
off; more rollbacks than allowed stop the run with exit code 3 and a report."""

import json

import pytest

from tests.engine.conftest import check, read_jsonl, run_train

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
    assert stop["exit_code"] == 3 and "rollbacks within" in stop["reason"]
    assert len([r for r in records if r["kind"] == "event" and r["event"] == "rollback"]) == 2
