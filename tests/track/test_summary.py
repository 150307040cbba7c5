"""The end-of-run table."""

from __future__ import annotations

import pytest

from yolotr.track.summary import print_summary, steady_images_per_s


def test_summary_reports_the_best_fitness_val_and_the_run_counters():
    records = [
        {"kind": "train", "time": 100.0, "step": 10, "epoch": 0, "skipped_steps": 0, "rollbacks": 0, "images_per_s": 90.0},
        {"kind": "val", "time": 110.0, "step": 10, "epoch": 0, "map50": 0.50, "map": 0.20},
        {"kind": "event", "time": 115.0, "step": 15, "event": "skip"},
        {"kind": "event", "time": 116.0, "step": 16, "event": "quarantine"},
        {"kind": "train", "time": 120.0, "step": 20, "epoch": 1, "skipped_steps": 1, "rollbacks": 1, "images_per_s": 110.0},
        # Higher mAP50 but lower fitness than the first validation:
        {"kind": "val", "time": 3765.0, "step": 20, "epoch": 1, "map50": 0.60, "map": 0.15},
    ]

    text = print_summary(records)

    assert "best mAP50-95  0.2000  (mAP50 0.5000, epoch 0, step 10)" in text
    assert "steps          20  (last epoch 1)" in text
    assert "skipped steps  1" in text
    assert "rollbacks      1" in text
    assert "quarantined    1" in text
    assert "time           1:01:05" in text
    assert "images/s       100.0" in text


def test_summary_of_a_run_without_validation_says_so():
    text = print_summary([{"kind": "train", "time": 0.0, "step": 5}])

    assert "no validation" in text and "steps          5" in text


def test_summary_reports_the_mean_data_wait_when_records_carry_it():
    records = [{"kind": "train", "time": 1.0, "step": 5, "data_wait": 0.1},
               {"kind": "train", "time": 2.0, "step": 10, "data_wait": 0.3}]
    assert "data wait      20 % of the time" in print_summary(records)
    assert "data wait" not in print_summary([{"kind": "train", "time": 0.0, "step": 5}])


def test_steady_images_per_s_counts_only_the_records_after_the_warm_up():
    records = [{"kind": "train", "time": 10.0, "step": 10, "images": 160},  # start-up: 10 s for 10 steps
               {"kind": "event", "time": 10.5, "step": 10, "event": "compile"},
               {"kind": "train", "time": 12.0, "step": 20, "images": 160},
               {"kind": "train", "time": 14.0, "step": 30, "images": 160}]
    assert steady_images_per_s(records, after_step=10) == (320 / 4.0, 20)
    with pytest.raises(ValueError, match="step 30"):
        steady_images_per_s(records, after_step=30)
