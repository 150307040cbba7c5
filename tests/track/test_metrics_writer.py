"""metrics.jsonl: one flushed JSON line per record, readable after a crash."""

from __future__ import annotations

import json
import math

import pytest
import torch

from yolotr.track.metrics import MetricsWriter, read_metrics


def test_each_record_is_one_json_line_with_kind_and_time(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.write("train", step=1, loss=0.5)
        writer.write("val", step=1, map50=0.2, map=0.1)

    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["train", "val"]
    assert all(isinstance(json.loads(line)["time"], float) for line in lines)


def test_a_written_record_is_on_disk_before_the_writer_closes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)

    writer.write("event", step=3, event="skip")

    assert read_metrics(path)[0]["event"] == "skip"
    writer.close()


def test_non_finite_numbers_and_tensors_survive_the_round_trip(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as writer:
        writer.write("train", step=2, grad_norm=float("inf"), loss=float("nan"), lr=torch.tensor([0.1, 0.01]))

    record = read_metrics(path)[0]
    assert math.isinf(record["grad_norm"]) and math.isnan(record["loss"])
    assert record["lr"] == pytest.approx([0.1, 0.01])


def test_a_truncated_last_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "tra')

    with pytest.warns(UserWarning, match="truncated last line"):
        records = read_metrics(path)

    assert records == [{"kind": "train", "step": 1}]


def test_a_damaged_line_before_the_end_raises_naming_the_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\nnot json\n{"kind": "train", "step": 2}\n')

    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_reopening_after_a_crash_trims_the_partial_line_and_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"kind": "train", "step": 1}\n{"kind": "tra')

    with pytest.warns(UserWarning, match="partial last line"):
        writer = MetricsWriter(path)
    writer.write("train", step=2)
    writer.close()

    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_kind_and_time_cannot_be_overridden(tmp_path):
    with MetricsWriter(tmp_path / "metrics.jsonl") as writer, pytest.raises(ValueError, match="set by MetricsWriter"):
        writer.write("train", time=0)
