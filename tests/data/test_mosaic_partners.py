"""Mosaic partners drawn from the whole train split (YOLOv5's way), read by byte offset: which samples they are
depends only on (seed, epoch, primary key), a quarantined or corrupt partner is replaced by the primary."""

import numpy as np

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment_plan import sample_rng
from yolotr.data.decode import decode_sample
from yolotr.data.producers import DatasetPartners, TrainBatches, TrainPlan
from yolotr.data.shard_reader import ShardReader


def _partners(split, key, *, quarantine=frozenset(), epoch=0):
    reader = ShardReader(split)
    primary = decode_sample(key, reader.read(split.keys.index(key)), nc=split.nc)
    draw = DatasetPartners(reader, quarantine, decoded={})
    try:
        return [p.key for p in draw(sample_rng(0, epoch, key), primary)]
    finally:
        reader.close()


def test_partners_come_from_the_whole_split_and_the_same_key_epoch_and_seed_draw_the_same(split_100):
    drawn = [k for key in split_100.keys[:20] for k in _partners(split_100, key)]
    assert len(set(drawn)) > 30  # 60 draws from 100 samples, not the 20 primaries' batch
    assert set(drawn) - set(split_100.keys[:20])
    first = split_100.keys[3]
    assert _partners(split_100, first) == _partners(split_100, first)
    assert _partners(split_100, first) != _partners(split_100, first, epoch=1)


def test_a_quarantined_partner_is_replaced_by_the_primary(split_100):
    key = split_100.keys[5]
    drawn = _partners(split_100, key)
    assert _partners(split_100, key, quarantine=frozenset(drawn)) == [key] * 3


def test_a_dataset_mosaic_batch_holds_boxes_of_samples_outside_the_batch(split_100):
    # 4 images per batch, every one a mosaic: with partners from the batch, a batch's boxes would only be the
    # boxes of its 4 samples; drawn from the split they are almost surely more.
    def boxes_per_batch(partners: str) -> int:
        plan = TrainPlan(split=split_100, order=np.arange(100), epoch=0, first_step=0, stop_step=1, rank=0,
                         world_size=1, global_batch_size=4, seed=0, imgsz=64,
                         augment=AugmentConfig(mosaic=1.0, mosaic_partners=partners, scale=0.0, translate=0.0),
                         quarantine=frozenset())
        reader = ShardReader(split_100)
        try:
            batch, _ = TrainBatches(plan).build(0, reader)
        finally:
            reader.close()
        return len({tuple(row) for row in batch.targets[:, 1:].tolist()})

    assert boxes_per_batch("dataset") != boxes_per_batch("batch")
