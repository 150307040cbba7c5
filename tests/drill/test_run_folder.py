"""What the drill's supervisor reads from a run folder belongs to the attempt it watches: a killed attempt's records
and its uncommitted save must not make a fault due at a later step fire before the new attempt has resumed."""

import json
import os
import time

from yolotr.drill.run_folder import RunFolder


def _train(step: int, at: float) -> str:
    return json.dumps({"kind": "train", "step": step, "time": at}) + "\n"


def test_the_step_an_attempt_reached_counts_only_records_written_since_it_started(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(_train(40, 100.0) + _train(41, 101.0))  # the killed attempt's records
    folder = RunFolder(tmp_path)
    assert folder.trained_step() == 41
    assert folder.trained_step(since=200.0) == 0  # the new attempt has not trained yet
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(_train(33, 201.0))  # resumed from step 32
    assert folder.trained_step(since=200.0) == 33


def test_a_save_left_uncommitted_by_a_killed_attempt_is_not_the_new_attempts_commit(tmp_path):
    tmp = tmp_path / "checkpoints" / "step-00000012.tmp"
    tmp.mkdir(parents=True)
    for name in ("trainer.json", "hashes-rank-0.json", "hashes-rank-1.json"):
        (tmp / name).write_text("{}")
    os.utime(tmp / "trainer.json", (100.0, 100.0))
    folder = RunFolder(tmp_path)
    assert folder.committing(12, world_size=2) == tmp
    assert folder.committing(12, world_size=2, since=200.0) is None
    os.utime(tmp / "trainer.json", (time.time(), time.time()))  # the new attempt writes that save again
    assert folder.committing(12, world_size=2, since=200.0) == tmp
