"""Labels read on their own (for statistics over the train boxes): the same bytes as in the whole sample."""

import pytest

from yolotr.data.errors import SampleError
from yolotr.data.shard_reader import ShardReader
from yolotr.data.split_labels import read_split_labels


def test_a_label_member_read_alone_is_the_one_in_the_whole_sample(split_100):
    reader = ShardReader(split_100)
    try:
        for global_id in range(split_100.num_samples):
            assert bytes(reader.read_member(global_id, "json")) == bytes(reader.read(global_id)["json"])
            assert bytes(reader.read_member(global_id, "jpg")) == bytes(reader.read(global_id)["jpg"])
        with pytest.raises(SampleError, match="missing_image"):
            reader.read_member(0, "png")
    finally:
        reader.close()
    labels = read_split_labels(split_100)
    assert len(labels) == 100 and all(len(label.boxes) == len(label.classes) for label in labels)


def test_a_label_whose_sample_lost_its_label_is_left_out(raw_split, jpeg_bytes):
    split = raw_split([{"__key__": "a", "jpg": jpeg_bytes()},
                       {"__key__": "b", "jpg": jpeg_bytes(), "json": b'{"boxes": [], "classes": [], "width": 48, '
                                                                     b'"height": 40}'}])
    labels = read_split_labels(split)
    assert [label.width for label in labels] == [48]
