"""The end-of-run table."""

from __future__ import annotations

from yolotr.track.summary import print_summary


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
