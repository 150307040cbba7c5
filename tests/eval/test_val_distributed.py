"""`yolotr val` under torchrun: two processes give the same metrics as one, every image counted once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TORCHRUN = Path(sys.executable).with_name("torchrun")


def run_val(launcher: list[str], weights: Path, data: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    command = [*launcher, "-m", "yolotr", "val", "--weights", str(weights), "--data", str(data),
               "--batch-size", "4", "--device", "cpu", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {done.stdout!r}"
    return json.loads(lines[0])


@pytest.mark.slow
def test_two_processes_give_the_same_map_as_one(tiny_weights, synth_data):
    weights, _ = tiny_weights

    single = run_val([sys.executable], weights, synth_data)
    # 9 images over 2 ranks: 4 and 5 images, so 1 and 2 batches of 4 - uneven on purpose.
    double = run_val([str(TORCHRUN), "--standalone", "--nproc-per-node", "2"], weights, synth_data)

    assert single["n_images"] == double["n_images"] == 9
    assert single["n_detections"] == double["n_detections"]
    assert single["map50"] > 0  # the confident tiny model overlaps some boxes, so equality is not 0 == 0
    for key in ("map50", "map", "precision", "recall"):
        assert double[key] == pytest.approx(single[key], abs=1e-9), key
    assert double["per_class_ap"] == pytest.approx(single["per_class_ap"], abs=1e-9)
