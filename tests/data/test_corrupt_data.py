"""Corrupt data never hangs or stops a run by itself: the sample is skipped, counted by reason and logged with its
key; the position still advances; an unreadable shard is skipped and counted; past the error budget the run stops
with a report."""

from __future__ import annotations

import logging
import math
import tarfile
import time

import pytest

from yolotr.data.errors import DataErrorBudgetExceeded
from yolotr.data.stream import TrainStream


def make_stream(split, *, global_batch_size=8, num_workers=0, max_error_fraction=0.5, **kwargs):
    return TrainStream(split, global_batch_size=global_batch_size, rank=0, world_size=1, seed=0, imgsz=32,
                       augment=None, num_workers=num_workers, max_error_fraction=max_error_fraction, **kwargs)


def run_epoch(stream):
    keys = [key for batch in stream for key in batch.keys]
    return keys


def overwrite_member(split, key, extension, data: bytes):
    """Replaces the bytes of member `key.extension` in its shard, keeping its size (the index stays valid)."""
    shard = split.shard_path(int(split.shard_of[split.keys.index(key)]))
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.{extension}")
    assert len(data) <= member.size
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(data.ljust(member.size, b" "))


def test_a_truncated_shard_loses_only_the_samples_past_the_cut(synth_split, caplog):
    split = synth_split(40, samples_per_shard=10)
    shard = split.shard_path(1)
    cut = split.shards[1].offsets[6] + 700  # inside sample 6 of shard 1
    shard.write_bytes(shard.read_bytes()[:cut])
    lost = split.shards[1].keys[6:]

    with caplog.at_level(logging.WARNING, logger="yolotr.data"):
        stream = make_stream(split, num_workers=2)
        delivered = run_epoch(stream)

    counters = stream.counters()
    assert counters["errors"] == {"truncated_shard": 4}
    assert sorted(key for key, _ in stream.error_log) == sorted(lost)
    assert len(delivered) == 36 and not set(delivered) & set(lost)
    assert (stream.epoch, stream.step_in_epoch) == (1, 0)  # the position advanced past the damage
    assert any(lost[0] in r.getMessage() and "truncated_shard" in r.getMessage() for r in caplog.records)


def test_an_unreadable_shard_is_skipped_and_counted(synth_split):
    split = synth_split(40, samples_per_shard=10)
    split.shard_path(2).unlink()

    stream = make_stream(split)
    delivered = run_epoch(stream)

    assert stream.counters()["unreadable_shards"] == 1
    assert stream.counters()["errors"] == {"unreadable_shard": 10}
    assert set(delivered) == set(split.keys) - set(split.shards[2].keys)


def test_a_member_that_is_not_a_valid_jpeg_is_skipped(synth_split):
    split = synth_split(16, samples_per_shard=8)
    overwrite_member(split, split.keys[3], "jpg", b"this is not a jpeg")

    stream = make_stream(split)
    delivered = run_epoch(stream)

    assert stream.error_log == [(split.keys[3], "invalid_image")]
    assert split.keys[3] not in delivered and len(delivered) == 15


def test_invalid_label_json_is_skipped(synth_split):
    split = synth_split(16, samples_per_shard=8)
    overwrite_member(split, split.keys[9], "json", b"{not json")

    stream = make_stream(split)
    run_epoch(stream)

    assert stream.error_log == [(split.keys[9], "invalid_json")]


def _sample(key, jpeg, make_label, *, image=True, label=True, boxes=((5.0, 5.0, 20.0, 20.0),), classes=(0,),
            width=48, height=40):
    sample = {"__key__": key}
    if image:
        sample["jpg"] = jpeg(48, 40)
    if label:
        sample["json"] = make_label([list(b) for b in boxes], list(classes), width, height)
    return sample


@pytest.mark.parametrize("damage, reason", [
    ({"image": False}, "missing_image"),
    ({"label": False}, "missing_label"),
    ({"boxes": ((math.nan, 5.0, 20.0, 20.0),)}, "nonfinite_box"),
    ({"boxes": ((math.inf, 5.0, 20.0, 20.0),)}, "nonfinite_box"),
    ({"boxes": ((-4.0, 5.0, 20.0, 20.0),)}, "negative_box"),
    ({"boxes": ((20.0, 5.0, 10.0, 20.0),)}, "negative_box"),
    ({"boxes": ((5.0, 5.0, 90.0, 20.0),)}, "box_outside_image"),
    ({"classes": (3,)}, "class_out_of_range"),
    ({"classes": (-1,)}, "class_out_of_range"),
    ({"classes": (0.5,)}, "class_out_of_range"),
    ({"width": 64}, "image_size_mismatch"),
])
def test_each_kind_of_corrupt_sample_is_skipped_with_its_reason(raw_split, jpeg_bytes, make_label, damage, reason):
    samples = [_sample(f"good{i}", jpeg_bytes, make_label) for i in range(7)]
    samples.insert(3, _sample("bad", jpeg_bytes, make_label, **damage))
    split = raw_split(samples, nc=3)

    stream = make_stream(split)
    delivered = run_epoch(stream)

    assert stream.error_log == [("bad", reason)]
    assert stream.counters()["errors"] == {reason: 1}
    assert sorted(delivered) == [f"good{i}" for i in range(7)]


def test_exceeding_the_error_budget_stops_with_a_report(synth_split):
    split = synth_split(80, samples_per_shard=10)
    split.shard_path(3).unlink()  # 10 of 80 samples lost: 12.5%

    stream = make_stream(split, max_error_fraction=0.05)
    with pytest.raises(DataErrorBudgetExceeded) as raised:
        run_epoch(stream)

    report = str(raised.value)
    assert "unreadable_shard: " in report and "yolotr data check" in report
    assert split.shards[3].keys[0] in report


def test_errors_below_the_budget_do_not_stop_the_run(synth_split):
    split = synth_split(80, samples_per_shard=10)
    overwrite_member(split, split.keys[0], "json", b"{broken")

    stream = make_stream(split, max_error_fraction=0.02)  # 1 of 80 is 1.25%
    delivered = run_epoch(stream)

    assert len(delivered) == 79


def test_many_corrupt_samples_cost_no_waiting(raw_split, jpeg_bytes, make_label):
    samples = [{"__key__": f"s{i:04d}", "jpg": b"\xff\xd8\xff broken", "json": make_label([], [])} for i in range(400)]
    split = raw_split(samples)

    start = time.perf_counter()
    stream = make_stream(split, max_error_fraction=1.0)
    batches = sum(1 for _ in stream)

    assert batches == 50 and stream.counters()["errors"] == {"invalid_image": 400}
    assert time.perf_counter() - start < 5.0


def test_quarantined_samples_are_skipped_and_counted_apart_from_errors(synth_split):
    split = synth_split(40, samples_per_shard=10)
    quarantined = set(split.keys[:3])

    stream = make_stream(split, quarantine=quarantined)
    delivered = run_epoch(stream)

    assert not quarantined & set(delivered) and len(delivered) == 37
    assert stream.counters()["quarantined"] == 3 and stream.counters()["errors_total"] == 0
    assert stream.state_dict()["quarantine"] == sorted(quarantined)


def test_quarantine_added_while_workers_run_ahead_applies_to_the_next_batch(synth_split):
    split = synth_split(64, samples_per_shard=16)
    stream = make_stream(split, num_workers=2)
    delivered = []

    for batch in stream:
        if batch.step == 0:
            later = [k for k in split.keys if k not in batch.keys]  # every key not yet delivered, prefetched or not
            stream.add_quarantine(later[:40])
        delivered += batch.keys
        assert set(batch.targets[:, 0].long().tolist()) <= set(range(len(batch.keys)))  # indices re-numbered

    assert not set(later[:40]) & set(delivered[8:])
    assert stream.counters()["quarantined"] == 40
