"""data.yaml loading (errors name the file and the key) and the sample ledger."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from yolotr.data.errors import DataSpecError
from yolotr.data.spec import load_data_yaml
from yolotr.data.stream import TrainStream
from yolotr.debug.ledger import LedgerWriter, read_ledger


def write_yaml(path, doc):
    path.write_text(yaml.safe_dump(doc))
    return path


def test_data_yaml_accepts_yolov5_name_mappings_and_shard_patterns(split_100, tmp_path):
    root = split_100.directory
    path = write_yaml(tmp_path / "data.yaml", {
        "path": str(root), "train": "shard-{000000..000003}.tar", "val": ["shard-000014.tar"],
        "names": {0: "a", 1: "b", 2: "c"}})

    spec = load_data_yaml(path)

    assert spec.names == ["a", "b", "c"] and spec.nc == 3
    assert spec.train.num_samples == 28 and spec.val.num_samples == 2
    assert spec.train.keys == split_100.keys[:28]


def test_shards_without_an_index_are_indexed_by_reading_them(split_100, tmp_path):
    import shutil

    for name in ("shard-000000.tar", "shard-000001.tar"):
        shutil.copy(split_100.directory / name, tmp_path / name)
    path = write_yaml(tmp_path / "data.yaml", {"train": ["shard-000000.tar"], "val": "shard-000001.tar",
                                               "names": ["a", "b", "c"]})

    spec = load_data_yaml(path)

    assert spec.train.keys == split_100.keys[:7]
    assert spec.train.shards[0].offsets == split_100.shards[0].offsets


@pytest.mark.parametrize("doc, message", [
    ({"val": "x", "names": ["a"]}, "key 'train' is missing"),
    ({"train": "nope/index.json", "val": "x", "names": ["a"]}, "key 'train': .*index file not found"),
    ({"train": "x", "val": "x", "names": ["a"], "nc": 2}, "key 'nc'"),
    ({"train": "x", "val": "x", "names": "a"}, "key 'names'"),
    ({"train": "x", "val": "x", "names": {1: "a"}}, "key 'names'"),
])
def test_data_yaml_errors_name_the_file_and_the_key(tmp_path, doc, message):
    path = write_yaml(tmp_path / "data.yaml", doc)

    with pytest.raises(DataSpecError, match=message) as raised:
        load_data_yaml(path)

    assert str(path) in str(raised.value)


def test_data_yaml_refuses_fewer_classes_than_the_shards_were_written_with(split_100, tmp_path):
    path = write_yaml(tmp_path / "data.yaml", {"path": str(split_100.directory), "train": "index.json",
                                               "val": "index.json", "names": ["a", "b"]})

    with pytest.raises(DataSpecError, match="nc=3"):
        load_data_yaml(path)


def test_ledgers_of_all_ranks_audit_exactly_once_delivery(split_100, tmp_path):
    ledger_path = tmp_path / "run" / "ledger.jsonl"
    for rank in range(2):
        stream = TrainStream(split_100, global_batch_size=10, rank=rank, world_size=2, seed=0, imgsz=32,
                             augment=None)
        with LedgerWriter(ledger_path) as ledger:
            for batch in stream:
                ledger.write(batch.epoch, batch.step, rank, batch.keys)

    entries = read_ledger(ledger_path)

    assert set(entries[0]) == {"epoch", "step", "rank", "key"}
    assert len(entries) == 100 and max(Counter(e["key"] for e in entries).values()) == 1
    assert Counter(e["rank"] for e in entries) == {0: 50, 1: 50}


def test_shards_from_other_writers_with_pax_headers_are_indexed_and_read(tmp_path, jpeg_bytes, make_label):
    import webdataset as wds

    from yolotr.data.decode import decode_sample
    from yolotr.data.shard_reader import ShardReader

    # webdataset's defaults write a float mtime, which makes tarfile add a pax header before every member.
    with wds.TarWriter(str(tmp_path / "shard-000000.tar"), encoder=False) as writer:
        for i in range(3):
            writer.write({"__key__": f"k{i}", "jpg": jpeg_bytes(48, 40), "json": make_label([[1, 2, 9, 9]], [1])})
    path = write_yaml(tmp_path / "data.yaml", {"train": "shard-000000.tar", "val": "shard-000000.tar",
                                               "names": ["a", "b"]})

    split = load_data_yaml(path).train
    reader = ShardReader(split)
    samples = [decode_sample(key, reader.read(i), nc=2) for i, key in enumerate(split.keys)]

    assert split.keys == ["k0", "k1", "k2"]
    assert [s.label.classes.tolist() for s in samples] == [[1], [1], [1]]
