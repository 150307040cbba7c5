"""W&B: what WandbLogger writes offline is read back from the .wandb file, across a resume."""

from __future__ import annotations

import time

import pytest
import torch

from yolotr.track.metrics import MetricsWriter, read_metrics, supersede_records_after
from yolotr.track.wandb_logger import WandbLogger, wandb_mode, wandb_wanted
from yolotr.track.wandb_reader import find_wandb_files, iter_records, read_history, read_run_history

NAMES = ["cat", "dog"]


def log_training(logger: WandbLogger, writer: MetricsWriter, steps: range, map_at_end: float) -> None:
    """What the trainer does: write each record to metrics.jsonl and mirror it to W&B."""
    for step in steps:
        record = writer.write(
            "train", step=step, epoch=0, loss=1.0 / (step + 1), box=0.1, obj=0.2, cls=0.3, lr=[0.01, 0.001],
            lr_groups=["cnn", "transformer"], grad_norm=2.0, skipped_steps=0, rollbacks=0, images_per_s=50.0,
        )
        logger.log_record(record)
    logger.log_record(writer.write("val", step=steps[-1], epoch=0, map50=map_at_end, map=map_at_end / 2))


def test_history_read_back_holds_losses_and_map_at_their_steps(offline_wandb):
    run_dir = offline_wandb / "run"
    logger = WandbLogger(run_dir, {"epochs": 1, "lr0": 0.01}, run_id=None, enabled=True)
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        log_training(logger, writer, range(0, 50, 10), map_at_end=0.4)
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    predictions = [torch.tensor([[4.0, 4.0, 30.0, 30.0, 0.9, 1.0]]), torch.zeros(0, 6)]
    logger.log_images(images, predictions, torch.tensor([[0, 0, 0.5, 0.5, 0.25, 0.25]]), NAMES, step=40)
    logger.finish()

    (wandb_file,) = find_wandb_files(run_dir)
    run_id, rows = read_history(wandb_file)

    assert run_id == logger.run_id
    losses = {row["_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert losses == pytest.approx({0: 1.0, 10: 1 / 11, 20: 1 / 21, 30: 1 / 31, 40: 1 / 41})
    assert [row["train/lr/transformer"] for row in rows if "train/lr/transformer" in row] == [0.001] * 5
    (val_row,) = [row for row in rows if "val/map50" in row]
    assert val_row["_step"] == 40 and val_row["val/map"] == pytest.approx(0.2)
    assert val_row["val/predictions.count"] == 2  # the wandb.Image list, with boxes, logged at the val step


def test_a_resumed_run_logs_into_the_same_id_with_continued_steps(offline_wandb):
    run_dir = offline_wandb / "run"
    first = WandbLogger(run_dir, {"epochs": 2}, run_id=None, enabled=True)
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        log_training(first, writer, range(0, 30, 10), map_at_end=0.2)
    first.finish()
    # Offline folders are named by the second they start in; a real resume is a later process.
    time.sleep(1.1)

    resumed = WandbLogger(run_dir, {"epochs": 2}, run_id=first.run_id, enabled=True)
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        log_training(resumed, writer, range(30, 60, 10), map_at_end=0.3)
    resumed.finish()

    first_file, second_file = find_wandb_files(run_dir)
    assert first_file.parent != second_file.parent
    (first_id, first_rows), (second_id, second_rows) = read_history(first_file), read_history(second_file)
    assert resumed.run_id == first_id == second_id == first.run_id
    assert [r["_step"] for r in first_rows] == [0, 10, 20]
    assert [r["_step"] for r in second_rows] == [30, 40, 50]
    assert second_rows[-1]["val/map50"] == pytest.approx(0.3)


def test_after_a_resume_that_superseded_records_the_readers_see_each_step_once_with_the_resumed_values(
        offline_wandb):
    run_dir = offline_wandb / "run"
    # The first start trains steps 1-6 (a checkpoint at 4), validates at 6 and dies; W&B and metrics.jsonl hold it.
    first = WandbLogger(run_dir, {}, run_id=None, enabled=True)
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        for step in range(1, 7):
            first.log_record(writer.write("train", step=step, epoch=0, loss=1.0))
        first.log_record(writer.write("val", step=6, epoch=0, map50=0.9))
    first.finish()
    time.sleep(1.1)  # a later process: offline folders are named by the second they start in
    # The resumed start, as the trainer does it: records after step 4 move aside, the W&B run is continued rewound
    # to step 4, and steps 5-8 are trained again (no validation at 6 this time).
    assert supersede_records_after(run_dir / "metrics.jsonl", 4) == 3  # train 5, 6 and the val at 6
    resumed = WandbLogger(run_dir, {}, run_id=first.run_id, enabled=True, resumed_at=4)
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        resumed.log_record(writer.write("event", event="resume", step=4))
        for step in range(5, 9):
            resumed.log_record(writer.write("train", step=step, epoch=0, loss=0.5))
    resumed.finish()

    first_file, resumed_file = find_wandb_files(run_dir)
    run_records = [r.run for r in iter_records(resumed_file) if r.WhichOneof("record_type") == "run"]
    run_id, rows = read_run_history(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")  # what the summary and the plots read

    # Each file keeps what its start logged; the resumed one says where it rewound the run to (`wandb sync` sends it).
    assert [r["_step"] for r in read_history(first_file)[1]] == [1, 2, 3, 4, 5, 6]  # the val row merged into 6
    assert [r["_step"] for r in read_history(resumed_file)[1]] == [5, 6, 7, 8]
    assert (run_records[0].run_id, run_records[0].branch_point.metric, run_records[0].branch_point.value) == (
        first.run_id, "_step", 4)
    assert run_id == first.run_id
    assert [row["_step"] for row in rows] == list(range(1, 9))
    assert [row["train/loss"] for row in rows] == [1.0] * 4 + [0.5] * 4  # the resumed values, not the superseded
    assert not [row for row in rows if "val/map50" in row]  # the val at 6 belongs to training thrown away
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 9))
    assert [r["loss"] for r in records if r["kind"] == "train"] == [1.0] * 4 + [0.5] * 4
    assert not [r for r in records if r["kind"] == "val"]


def test_a_record_longer_than_a_block_is_reassembled(offline_wandb):
    run_dir = offline_wandb / "run"
    logger = WandbLogger(run_dir, {}, run_id=None, enabled=True)
    logger.log({"note": "x" * 100_000}, step=7)  # spans four 32 KiB blocks
    logger.finish()

    _, rows = read_history(find_wandb_files(run_dir)[0])

    assert rows[0]["note"] == "x" * 100_000 and rows[0]["_step"] == 7


def test_a_corrupted_chunk_fails_its_checksum_and_a_cut_file_reads_to_the_cut(offline_wandb):
    run_dir = offline_wandb / "run"
    logger = WandbLogger(run_dir, {}, run_id=None, enabled=True)
    for step in range(5):
        logger.log({"loss": float(step)}, step=step)
    logger.finish()
    data = find_wandb_files(run_dir)[0].read_bytes()
    damaged, cut = offline_wandb / "damaged.wandb", offline_wandb / "cut.wandb"
    damaged.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    cut.write_bytes(data[: len(data) * 2 // 3])

    with pytest.raises(ValueError, match="checksum mismatch"):
        list(iter_records(damaged))
    assert 0 < len(list(iter_records(cut))) < len(list(iter_records(find_wandb_files(run_dir)[0])))


def test_disabled_logging_writes_nothing_and_keeps_the_given_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")

    logger = WandbLogger(tmp_path, {"a": 1}, run_id="abc123", enabled=True)
    logger.log({"loss": 1.0}, step=1)
    logger.finish()

    assert not logger.active and logger.run_id == "abc123"
    assert not (tmp_path / "wandb").exists()


def test_mode_is_offline_without_a_key_and_online_with_one(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123\n")
    no_netrc = str(tmp_path / "missing")

    assert wandb_mode({"NETRC": no_netrc}) == "offline"
    assert wandb_mode({"NETRC": no_netrc, "WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode({"NETRC": str(netrc)}) == "online"
    assert wandb_mode({"NETRC": str(netrc), "WANDB_BASE_URL": "https://wandb.example.com"}) == "offline"
    assert wandb_mode({"NETRC": str(netrc), "WANDB_MODE": "disabled"}) == "disabled"
    assert wandb_mode({"NETRC": no_netrc, "WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"


def test_auto_logs_only_where_wandb_is_set_up_and_true_or_false_decide_alone(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123\n")
    plain = {"NETRC": str(tmp_path / "missing")}

    assert not wandb_wanted("auto", plain)
    assert wandb_wanted("auto", {**plain, "WANDB_API_KEY": "k"})
    assert wandb_wanted("auto", {"NETRC": str(netrc)})  # `wandb login` wrote it
    assert wandb_wanted("auto", {**plain, "WANDB_MODE": "offline"})
    assert wandb_wanted(True, plain) and not wandb_wanted(False, {**plain, "WANDB_API_KEY": "k"})


def test_an_event_told_after_later_steps_is_counted_at_the_newest_step_not_dropped(offline_wandb):
    logger = WandbLogger(offline_wandb / "run", {}, run_id=None, enabled=True)
    logger.log({"train/loss": 1.0}, step=4)
    logger.log_record({"kind": "event", "event": "checkpoint", "step": 2})  # a background save of step 2 committed
    wandb_file = find_wandb_files(offline_wandb / "run")[0]
    logger.finish()

    _, rows = read_history(wandb_file)
    assert [row.get("event/checkpoint") for row in rows if row["_step"] == 4] == [1]
