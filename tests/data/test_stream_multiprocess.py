"""Exact resume with real processes: 2 torchrun ranks train part of an epoch and stop; 1 rank resumes from the
saved state; the shared ledger shows every sample of the epoch trained exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from yolotr.data.order import epoch_order
from yolotr.data.spec import write_data_yaml
from yolotr.debug.ledger import read_ledger

SCRIPT = Path(__file__).with_name("torchrun_stream_script.py")


def torchrun(nproc: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    str(SCRIPT), *args], check=True, env=env, timeout=180, capture_output=True)


@pytest.mark.slow
def test_two_processes_stopped_midway_and_resumed_on_one_train_each_sample_once(split_100, tmp_path):
    data_yaml = write_data_yaml(tmp_path / "data.yaml", names=["c0", "c1", "c2"],
                                splits={"train": str(split_100.directory / "index.json"),
                                        "val": str(split_100.directory / "index.json")})
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    torchrun(2, str(data_yaml), str(run_dir), "--stop-step", "5")
    torchrun(1, str(data_yaml), str(run_dir), "--resume")

    ledger = read_ledger(run_dir / "ledger.jsonl")
    order = epoch_order([s.samples for s in split_100.shards], seed=0, epoch=0, window_shards=4)
    expected = Counter(split_100.keys[i] for i in order[:96])  # 12 steps of 8; 4 dropped
    assert Counter(entry["key"] for entry in ledger) == expected
    assert {entry["rank"] for entry in ledger if entry["step"] < 5} == {0, 1}
    assert {entry["rank"] for entry in ledger if entry["step"] >= 5} == {0}
    assert sorted({entry["step"] for entry in ledger}) == list(range(12))
