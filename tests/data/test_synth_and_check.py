"""`yolotr data synth` writes a deterministic, learnable synthetic set; `yolotr data check` verifies shards against
their index and reports damage."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from yolotr.cli import main
from yolotr.data.check import check_split
from yolotr.data.spec import load_data_yaml
from yolotr.data.synth import synthetic_samples, write_synthetic_dataset


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert main(["data", "synth", "--out", str(out), "--train", "40", "--val", "12", "--imgsz", "96",
                 "--classes", "5", "--seed", "3", "--samples-per-shard", "16"]) == 0
    return out


def test_synth_writes_shards_indexes_and_a_loadable_data_yaml(synth_dir):
    spec = load_data_yaml(synth_dir / "data.yaml")

    assert spec.names == ["circle", "square", "triangle", "cross", "star"]
    assert spec.train.num_samples == 40 and len(spec.train.shards) == 3
    assert spec.val.num_samples == 12


def test_synth_is_byte_identical_for_a_seed_in_any_number_of_processes_and_different_for_another(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", train=10, val=3, imgsz=64, seed=7).parent
    # the same in 2 processes
    second = write_synthetic_dataset(tmp_path / "b", train=10, val=3, imgsz=64, seed=7, workers=2).parent
    other = write_synthetic_dataset(tmp_path / "c", train=10, val=3, imgsz=64, seed=8).parent

    for relative in ("train/shard-000000.tar", "val/shard-000000.tar", "train/index.json", "data.yaml"):
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    assert (first / "train/shard-000000.tar").read_bytes() != (other / "train/shard-000000.tar").read_bytes()


def test_synthetic_objects_are_large_varied_and_cover_every_class():
    samples = list(synthetic_samples("train", 200, classes=4, imgsz=160, seed=0))

    boxes = np.concatenate([s.label.boxes for s in samples])
    classes = np.concatenate([s.label.classes for s in samples])
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    aspect = (boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1])
    assert sides.min() >= 12
    assert np.bincount(classes, minlength=4).min() > 0.15 * len(classes)
    assert aspect.min() < 0.8 and aspect.max() > 1.25
    assert {(s.label.width, s.label.height) for s in samples} != {(160, 160)}  # not all square


def test_data_check_passes_good_shards(synth_dir, capsys):
    code = main(["data", "check", str(synth_dir)])

    out = capsys.readouterr().out
    assert code == 0
    assert "train: OK - 3 shards, 40 samples indexed, 40 readable, 0 corrupt" in out
    assert "boxes per class: circle=" in out


def test_data_check_reports_truncation_hash_mismatch_and_corrupt_samples(synth_dir, tmp_path, capsys):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(synth_dir, damaged)
    spec = load_data_yaml(damaged / "data.yaml")
    truncated = spec.train.shard_path(2)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    flipped = spec.train.shard_path(0)
    with tarfile.open(flipped) as tar:
        member = tar.getmember(f"{spec.train.keys[1]}.jpg")
    with open(flipped, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"garbage!")

    code = main(["data", "check", str(damaged / "train"), "--json"])

    report = json.loads(capsys.readouterr().out)
    train = report["splits"]["train"]
    assert code == 1 and report["ok"] is False
    problems = {p["file"]: p["problem"] for p in train["shard_problems"]}
    assert "sha256 differs" in problems["shard-000000.tar"]
    assert "shard-000002.tar" in problems
    reasons = {c["key"]: c["reason"] for c in train["corrupt"]}
    assert reasons[spec.train.keys[1]] == "invalid_image"
    assert sum(r == "truncated_shard" for r in reasons.values()) >= 6


def test_check_split_counts_boxes_per_class(synth_dir):
    spec = load_data_yaml(synth_dir / "data.yaml")

    result = check_split(spec.val)

    assert result.ok and result.samples_ok == 12
    assert sum(result.boxes_per_class.values()) >= 12
