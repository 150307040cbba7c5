"""`yolotr train data=<a YOLO data.yaml>` with 2 real ranks: one rank converts the dataset into the cache while the
other waits on the lock, both train on the same shards, and later runs (and `yolotr val`) reuse the cache."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from tests.engine.conftest import REPO, check, run_train

pytestmark = pytest.mark.slow


@pytest.fixture
def yolo_folder_set(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "folder-set"
    for split, count in (("train", 24), ("val", 8)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            x, y, size = (int(v) for v in rng.integers(4, 30, 3))
            image[y : y + size + 8, x : x + size + 8] = 230 if i % 2 else 140
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            cx, cy, side = (x + (size + 8) / 2) / 64, (y + (size + 8) / 2) / 64, (size + 8) / 64
            (root / "labels" / split / f"{i}.txt").write_text(f"{i % 2} {cx:.5f} {cy:.5f} {side:.5f} {side:.5f}\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": ["dim", "bright"]}))
    return root / "data.yaml"


def test_two_ranks_train_from_a_yolo_data_yaml_and_exactly_one_converts_it(train_config, yolo_folder_set, tmp_path):
    config = train_config(data=str(yolo_folder_set), train={"max_steps": 3}, debug={"rank_digests": False})

    first = run_train(config, nproc=2)
    check(first)
    # Said by the rank that converts (`[yolotr rank N] data: converting ...`), whichever took the lock first.
    assert first.stderr.count("] data: converting") == 1, first.stderr[-3000:]
    (manifest,) = (yolo_folder_set.parent / ".yolotr" / "data").glob("*/cache.json")
    assert json.loads(manifest.read_text())["written"] == {"train": 24, "val": 8}

    again = run_train(config, f"run.dir={tmp_path / 'run2'}", nproc=1, launcher="single")
    check(again)
    assert "data: converting" not in again.stderr

    val = subprocess.run([sys.executable, "-m", "yolotr", "val", "--weights", str(tmp_path / "run/weights/last.safetensors"),
                          "--data", str(yolo_folder_set), "--json"], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert val.returncode == 0, val.stderr[-3000:]
    assert json.loads(val.stdout)["n_images"] == 8
