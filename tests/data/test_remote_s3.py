"""Shards in S3, through moto's S3 server on 127.0.0.1 (the real S3 protocol over HTTP), reached with the s3fs client
code a user's S3 would be, configured the usual way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from tests.data.remote_servers import s3_holding, synth_shard_set
from tests.data.test_convert import yolo_dataset
from tests.engine.conftest import free_port
from yolotr.cli import main
from yolotr.data.errors import RemoteDataError
from yolotr.data.remote.location import RemoteOptions
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml

__all__ = ["yolo_dataset"]  # a fixture, used by name


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory) -> Path:
    return synth_shard_set(tmp_path_factory.mktemp("s3-set"), train=24, val=8)


@pytest.fixture(scope="module")
def s3(shard_set):
    with s3_holding(shard_set, free_port()) as endpoint:
        yield endpoint


def samples(split) -> list[bytes]:
    reader = ShardReader(split)
    try:
        return [bytes(reader.read(i)["jpg"]) for i in range(split.num_samples)]
    finally:
        reader.close()


def test_a_data_yaml_in_s3_reads_the_same_samples_as_on_disk(s3, shard_set, tmp_path):
    spec = load_data_yaml("s3://datasets/synth/data.yaml", remote=RemoteOptions(cache_dir=str(tmp_path)))
    local = load_data_yaml(shard_set / "data.yaml")
    assert spec.train.shard_location(0) == "s3://datasets/synth/train/shard-000000.tar"
    assert samples(spec.train) == samples(local.train) and samples(spec.val) == samples(local.val)
    assert len(list(tmp_path.glob("*.tar"))) == 3 + 1


def test_a_missing_key_names_the_url_and_says_not_found(s3, tmp_path):
    with pytest.raises(RemoteDataError, match=r"s3://datasets/nothing/data\.yaml: not found \(404\)"):
        load_data_yaml("s3://datasets/nothing/data.yaml", remote=RemoteOptions(cache_dir=str(tmp_path)))


def test_data_check_verifies_a_set_in_s3(s3, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["data", "check", "s3://datasets/synth"]) == 0
    out = capsys.readouterr().out
    assert "train: OK - 3 shards, 24 samples indexed, 24 readable" in out
    assert "val: OK - 1 shards, 8 samples indexed, 8 readable" in out


def test_shard_out_s3_uploads_a_converted_set_that_reads_back_from_s3(s3, yolo_dataset, tmp_path,
                                                                                     monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = main(["data", "shard", "--format", "yolo", "--src", str(yolo_dataset / "data.yaml"), "--out",
                 "s3://datasets/converted/", "--samples-per-shard", "1"])
    assert code == 0
    assert "uploaded s3://datasets/converted/data.yaml" in capsys.readouterr().out
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="datasets", Prefix="converted/")["Contents"]]
    assert {"converted/data.yaml", "converted/report.json", "converted/train/index.json"} <= set(keys)

    spec = load_data_yaml("s3://datasets/converted/data.yaml")
    assert spec.names == ["cat", "dog"] and spec.train.num_samples == 4 and spec.val.num_samples == 1
    reader = ShardReader(spec.train)
    assert all("json" in reader.read(i) for i in range(spec.train.num_samples))
    reader.close()


def test_the_upload_order_puts_each_index_after_its_shards(s3, shard_set):
    from yolotr.data.remote.upload import upload_dataset

    written = upload_dataset(shard_set, "s3://datasets/ordered")
    for split in ("train", "val"):
        index = written.index(f"s3://datasets/ordered/{split}/index.json")
        shards = [i for i, url in enumerate(written) if url.startswith(f"s3://datasets/ordered/{split}/shard-")]
        assert shards and max(shards) < index
    assert written[-1] == "s3://datasets/ordered/data.yaml"
