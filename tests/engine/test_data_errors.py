"""Corrupt training data during a real run: skipped, counted and named by key and reason; past the error budget the
run stops with exit code 4 and a report. Nothing written before is lost."""

import json
import shutil
import tarfile

import pytest

from tests.engine.conftest import check, read_jsonl, run_train
from yolotr.data.spec import load_data_yaml

pytestmark = pytest.mark.slow


@pytest.fixture
def damaged_data(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data.parent, root)
    split = load_data_yaml(root / "data.yaml").train
    key = split.keys[5]
    shard = split.shard_path(int(split.shard_of[5]))
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.jpg")
    with open(shard, "r+b") as fh:  # same size: the index stays valid, the image does not
        fh.seek(member.offset_data)
        fh.write(b"not a jpeg".ljust(member.size, b" "))
    return root / "data.yaml", key


def test_a_corrupt_sample_is_skipped_and_named_and_training_completes(train_config, damaged_data, tmp_path):
    data, key = damaged_data
    config = train_config(data=str(data), train={"max_steps": 12, "max_data_error_fraction": 0.05})
    result = run_train(config)
    check(result)
    assert f"skipped corrupt sample {key}: invalid_image" in result.stderr
    train = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert train[-1]["step"] == 12


def test_past_the_error_budget_the_run_stops_with_exit_4_and_keeps_its_records(train_config, damaged_data, tmp_path):
    data, key = damaged_data
    config = train_config(data=str(data), train={"max_steps": 12, "max_data_error_fraction": 0.0})
    result = run_train(config, nproc=1, launcher="single")
    check(result, code=4)
    status = json.loads((tmp_path / "run" / "exit.json").read_text())
    assert status["exit_code"] == 4 and "budget" in status["reason"] and "invalid_image" in status["reason"]
    assert (tmp_path / "run" / "metrics.jsonl").stat().st_size > 0
