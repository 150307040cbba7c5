"""A short training logs a real offline W&B run: history readable from the .wandb file, resumed under the same id."""

import pytest

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.track.wandb_reader import find_wandb_files, iter_records, read_history, read_run_history

pytestmark = pytest.mark.slow


def test_offline_wandb_history_holds_loss_and_map_and_a_resume_continues_the_same_run(train_config, tmp_path):
    config = train_config(wandb={"enabled": True}, train={"max_steps": 4}, checkpoint={"every": 2})
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": ""}
    check(run_train(config, nproc=2, env=env))
    check(run_train(config, "train.max_steps=6", nproc=2, env=env))
    run_dir = tmp_path / "run"

    files = find_wandb_files(run_dir)
    assert len(files) == 2, files  # offline: one folder per process start, the resume adds the second
    (id1, rows1), (id2, rows2) = read_history(files[0]), read_history(files[1])
    assert id1 == id2
    steps1 = [r["_step"] for r in rows1 if "train/loss" in r]
    steps2 = [r["_step"] for r in rows2 if "train/loss" in r]
    assert steps1 == [1, 2, 3, 4] and steps2 == [5, 6]
    assert any("val/map50" in r and r["_step"] == 4 for r in rows1)
    assert any("val/map50" in r and r["_step"] == 6 for r in rows2)
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    first_loss = [r["loss"] for r in metrics if r["kind"] == "train"][0]
    assert [r["train/loss"] for r in rows1 if "train/loss" in r][0] == pytest.approx(first_loss)
    # The resume rewound the run to its checkpoint (what `wandb sync` tells the server), and reads back once per step.
    (run_record, *_) = [r.run for r in iter_records(files[1]) if r.WhichOneof("record_type") == "run"]
    assert (run_record.branch_point.metric, run_record.branch_point.value) == ("_step", 4)
    run_id, rows = read_run_history(run_dir)
    assert run_id == id1 and [r["_step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]


def test_checkpoint_events_committed_after_later_steps_reach_wandb_without_a_step_warning(train_config, tmp_path):
    # The writer commits a checkpoint while training goes on: its event names a step W&B has already passed, and a
    # row logged below W&B's current step is dropped with "Tried to log to step ... less than the current step".
    config = train_config(wandb={"enabled": True}, train={"max_steps": 8, "log_every": 1},
                          checkpoint={"every": 2, "writer": "process"}, faults={"pause_checkpoint_write_s": 1.0})
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": ""}  # not silent: W&B's warning must be seen if it comes
    result = run_train(config, nproc=1, launcher="single", env=env)
    check(result)
    run_dir = tmp_path / "run"

    assert "less than the current step" not in result.stdout + result.stderr
    saved = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "checkpoint"]
    assert len(saved) >= 4, saved
    _, rows = read_run_history(run_dir)
    logged = [r for r in rows if "event/checkpoint" in r]
    # One W&B row per step: checkpoints committed into the same row are counted there (metrics.jsonl lists each).
    assert sum(r["event/checkpoint"] for r in logged) == len(saved), logged
    assert {r["event/checkpoint/step"] for r in logged} <= set(saved) and logged[-1]["event/checkpoint/step"] == 8
    assert all(r["_step"] >= r["event/checkpoint/step"] for r in logged)
    steps = [r["_step"] for r in rows]
    assert steps == sorted(steps)  # W&B's axis never went back
