"""TensorBoard and results.csv mirror metrics.jsonl: what they hold is read back with TensorBoard's own reader and
the csv module. (A real training run with two resumes: tests/engine/test_resume.py.)"""

from __future__ import annotations

import csv
import sys

import pytest

from yolotr.track.loggers import RunLogger
from yolotr.track.metrics import read_metrics
from yolotr.track.results_csv import ResultsCsv, ResultsTable
from yolotr.track.tensorboard_logger import TensorBoardLogger


def train(step: int, loss: float | None, images: int = 8, **fields) -> dict:
    return {"kind": "train", "time": 1000.0 + step, "step": step, "epoch": 0, "loss": loss, "box": loss, "obj": loss,
            "cls": loss, "images": images, "lr": [0.01, 0.002], "lr_groups": ["cnn/weight", "transformer/weight"],
            "skipped_steps": 0, "rollbacks": 0, **fields}


def val(step: int, epoch: int, map50: float) -> dict:
    return {"kind": "val", "time": 1000.0 + step, "step": step, "epoch": epoch, "map50": map50, "map": map50 / 2,
            "precision": 0.7, "recall": 0.6, "fitness": 0.1 * map50 + 0.9 * map50 / 2, "final": False}


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_row_per_validation_with_the_image_weighted_train_losses_since_the_previous_row():
    table = ResultsTable()
    records = [train(1, 1.0, images=8), train(2, None), train(3, 0.4, images=24), val(3, 0, 0.5),
               train(4, 0.2, skipped_steps=1), val(4, 1, 0.6), val(4, 1, 0.6)]  # the end-of-run repeat: no row

    rows = [row for row in map(table.add, records) if row is not None]

    assert [(row["epoch"], row["step"]) for row in rows] == [(0, 3), (1, 4)]
    assert rows[0]["train/loss"] == pytest.approx((1.0 * 8 + 0.4 * 24) / 32)  # the skipped window has no loss
    assert rows[1]["train/box_loss"] == pytest.approx(0.2) and rows[1]["skipped_steps"] == 1
    assert rows[1]["metrics/mAP_0.5"] == 0.6 and rows[1]["metrics/mAP_0.5:0.95"] == 0.3
    assert rows[1]["lr/cnn/weight"] == 0.01 and rows[1]["lr/transformer/weight"] == 0.002


def test_the_columns_are_yolov5s_and_the_learning_rates_join_when_a_train_record_first_names_them(tmp_path):
    path = tmp_path / "results.csv"
    results = ResultsCsv(path, [])
    for record in [val(2, 0, 0.1), train(3, 0.5), val(4, 1, 0.2)]:  # an epoch shorter than train.log_every
        results.log_record(record)

    with open(path, newline="") as file:
        header = next(csv.reader(file))
    assert header == ["epoch", "step", "train/box_loss", "train/obj_loss", "train/cls_loss", "train/loss",
                      "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "fitness",
                      "skipped_steps", "rollbacks", "lr/cnn/weight", "lr/transformer/weight"]
    first, second = read_csv(path)
    assert first["train/loss"] == "" and first["lr/cnn/weight"] == ""  # nothing trained before it was recorded
    assert second["train/loss"] == "0.5" and second["lr/cnn/weight"] == "0.01"


def test_results_csv_is_remade_from_the_records_at_each_start_then_grows_a_row_per_validation(tmp_path):
    path = tmp_path / "results.csv"
    first = ResultsCsv(path, [])
    for record in [train(1, 1.0), val(1, 0, 0.1), train(2, 0.5), val(2, 1, 0.2)]:
        first.log_record(record)
    first.close()
    assert [row["step"] for row in read_csv(path)] == ["1", "2"]

    # A resume from step 1: the records it keeps hold one validation; the row of step 2 goes with its record.
    resumed = ResultsCsv(path, [train(1, 1.0), val(1, 0, 0.1)])
    resumed.log_record(train(2, 0.25))
    resumed.log_record(val(2, 1, 0.3))
    resumed.close()

    rows = read_csv(path)
    assert [row["step"] for row in rows] == ["1", "2"]
    assert float(rows[1]["metrics/mAP_0.5"]) == pytest.approx(0.3) and float(rows[1]["train/loss"]) == 0.25


def test_tensorboard_gets_train_and_val_records_under_the_wandb_keys_and_a_repeated_validation_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb", resumed_at=None)
    for record in [train(1, 1.0), train(2, 0.5), val(2, 0, 0.4), val(2, 0, 0.4),
                   {"kind": "event", "time": 1003.0, "step": 2, "event": "checkpoint"}]:
        logger.log_record(record)
    logger.close()

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0), (2, 0.5)]
    assert [(e.step, e.wall_time) for e in events.Scalars("val/map50")] == [(2, 1002.0)]
    assert [e.value for e in events.Scalars("train/lr/transformer/weight")] == pytest.approx([0.002, 0.002])
    assert not any(tag.startswith("event/") for tag in events.Tags()["scalars"])


def test_without_the_tensorboard_package_the_run_says_so_once_and_its_other_records_go_on(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # `import` of it now raises ImportError
    logger = RunLogger(tmp_path, is_main=True, wandb_enabled=False, wandb_project="p", wandb_name=None, config={},
                       tensorboard=True, results_csv=True)
    logger.open()
    logger.log("train", **{k: v for k, v in train(1, 1.0).items() if k not in ("kind", "time")})
    logger.log("val", **{k: v for k, v in val(1, 0, 0.5).items() if k not in ("kind", "time")})
    logger.close()

    err = capsys.readouterr().err
    assert err.count("log.tensorboard: no TensorBoard event files for this run") == 1
    assert "pip install 'yolotr[tensorboard]'" in err
    assert not (tmp_path / "tensorboard").exists()
    assert [r["kind"] for r in read_metrics(tmp_path / "metrics.jsonl")] == ["train", "val"]
    assert [row["step"] for row in read_csv(tmp_path / "results.csv")] == ["1"]


def test_a_resumed_run_logger_keeps_each_step_once_in_every_mirror(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def attempt(steps: range, *, resumed_from: int | None) -> None:
        logger = RunLogger(tmp_path, is_main=True, wandb_enabled=False, wandb_project="p", wandb_name=None,
                           config={}, tensorboard=True, results_csv=True)
        logger.open(step=resumed_from or 0, resumed=resumed_from is not None)
        for step in steps:
            logger.log("train", step=step, epoch=0, loss=1.0 / step, images=8)
            if step % 3 == 0:
                logger.log("val", step=step, epoch=step // 3 - 1, map50=step / 10, map=step / 20)
        logger.close()

    attempt(range(1, 7), resumed_from=None)  # validates at 3 and 6, crashes after step 6; its checkpoint was step 4
    attempt(range(5, 9), resumed_from=4)  # validates at 6 again

    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"] == list(range(1, 9))
    assert [row["step"] for row in read_csv(tmp_path / "results.csv")] == ["3", "6"]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in events.Scalars("val/map50")] == [3, 6]  # the first attempt's 6 hidden (purge_step)
