"""A YOLO dataset edited while a run trains on it: a second run converts the edited files, and the first run keeps
reading its own conversion to the end, and resumes on it later (real `yolotr train` processes, the demo config at 64
px, images whose size and aspect differ from the training size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml

from tests.engine.conftest import REPO

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def yolo_set(root):
    """16 train and 4 val images, alternately 100x60 and 48x90 (neither square nor 64 px), one box each."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            width, height = (100, 60) if i % 2 else (48, 90)
            image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
            image[10:40, 8:36] = 230
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            cx, cy, w, h = 22 / width, 25 / height, 28 / width, 30 / height
            (root / "labels" / split / f"{i}.txt").write_text(f"{i % 2} {cx:.5f} {cy:.5f} {w:.5f} {h:.5f}\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": ["a", "b"]}))
    return root / "data.yaml"


def train_command(data, run_dir, *extra):
    return [sys.executable, "-m", "yolotr", "train", "--config", "configs/train/demo.yaml", f"data={data}",
            f"run.dir={run_dir}", "train.imgsz=64", "train.batch_size=8", "train.nominal_batch_size=8",
            "train.max_steps=40", "checkpoint.every=10", "debug.sample_ledger=true", "train.progress_bar=false",
            "val.every_epochs=0", "train.num_workers=0", "wandb.enabled=false", *extra]


def steps_logged(run_dir) -> list[int]:
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = [json.loads(line) for line in lines if line.strip().endswith("}")]
    return [r["step"] for r in records if "loss" in r and "step" in r]


def test_a_second_run_on_the_edited_dataset_leaves_the_first_runs_shards_for_it_to_finish_and_resume(tmp_path):
    data = yolo_set(tmp_path / "set")
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    job_a = subprocess.Popen(train_command(data, run_a), cwd=REPO, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not any(step >= 5 for step in steps_logged(run_a)):  # A trains on its conversion
            assert job_a.poll() is None, job_a.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "run A logged no step in 300 s"
            time.sleep(0.5)
        with open(data.parent / "labels/train/3.txt", "a") as label:  # a label line appended mid-run
            label.write("0 0.5 0.5 0.2 0.2\n")

        job_b = subprocess.run(train_command(data, run_b, "train.max_steps=2"), cwd=REPO, env=ENV,
                               capture_output=True, text=True, timeout=600)
        assert job_b.returncode == 0, job_b.stderr[-3000:]
        assert "data: converting" in job_b.stderr and "kept 1 earlier conversion" in job_b.stderr, job_b.stderr[-3000:]
        _, a_err = job_a.communicate(timeout=600)
    finally:
        job_a.kill()
    assert job_a.returncode == 0, a_err[-3000:]
    assert "No such file" not in a_err and "skipped corrupt sample" not in a_err, a_err[-3000:]
    events = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    assert not [e for e in events if e.get("event") == "data_error" or e.get("data_errors")]
    ledger = [json.loads(line) for line in (run_a / "ledger.jsonl").read_text().splitlines()]
    assert sorted({entry["step"] for entry in ledger}) == list(range(1, 41)) and len(ledger) == 40 * 8
    a_record = json.loads((run_a / "data_conversion.json").read_text())
    b_record = json.loads((run_b / "data_conversion.json").read_text())
    assert a_record["fingerprint"] != b_record["fingerprint"]

    resumed = subprocess.run(train_command(data, run_a, f"--resume={run_a}", "train.max_steps=50"), cwd=REPO,
                             env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "has changed since" in resumed.stderr and "train: label files edited" in resumed.stderr
    assert max(steps_logged(run_a)) == 50
    assert json.loads((run_a / "data_conversion.json").read_text())["fingerprint"] == a_record["fingerprint"]
