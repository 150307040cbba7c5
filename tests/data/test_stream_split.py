"""TrainStream cuts each epoch into equal parts: every rank gets the same number of equal batches, for any number of
shards and ranks, with real shards and real DataLoader workers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from yolotr.config.augment import AugmentConfig
from yolotr.data.stream import TrainStream

IMGSZ = 32


def rank_streams(split, *, world_size, global_batch_size, num_workers=0, seed=0):
    return [TrainStream(split, global_batch_size=global_batch_size, rank=rank, world_size=world_size, seed=seed,
                        imgsz=IMGSZ, augment=AugmentConfig(), num_workers=num_workers) for rank in range(world_size)]


@pytest.mark.parametrize("world_size, global_batch_size, num_workers", [(3, 6, 2), (4, 8, 1), (5, 5, 0), (2, 14, 2)])
def test_every_rank_gets_the_same_number_of_equal_batches(split_100, world_size, global_batch_size, num_workers):
    streams = rank_streams(split_100, world_size=world_size, global_batch_size=global_batch_size,
                           num_workers=num_workers)

    sizes_per_rank = [[len(batch.keys) for batch in stream] for stream in streams]

    expected_steps = 100 // global_batch_size
    assert all(stream.steps_per_epoch == expected_steps for stream in streams)
    assert sizes_per_rank == [[global_batch_size // world_size] * expected_steps] * world_size


def test_batches_are_collated_uint8_images_and_normalised_yolo_targets(split_100):
    (stream,) = rank_streams(split_100, world_size=1, global_batch_size=10)

    batch = next(iter(stream))

    assert batch.images.dtype == torch.uint8 and batch.images.shape == (10, 3, IMGSZ, IMGSZ)
    assert batch.targets.dtype == torch.float32 and batch.targets.shape[1] == 6
    assert set(batch.targets[:, 0].long().tolist()) <= set(range(10))
    assert ((batch.targets[:, 2:] >= 0) & (batch.targets[:, 2:] <= 1)).all()
    assert (batch.epoch, batch.step) == (0, 0)


def test_the_remainder_is_dropped_stated_and_differs_between_epochs(split_100):
    streams = rank_streams(split_100, world_size=2, global_batch_size=16)  # 100 = 6·16 + 4

    delivered = {0: Counter(), 1: Counter()}
    for epoch in (0, 1):
        for stream in streams:
            for batch in stream:
                delivered[epoch].update(batch.keys)

    assert streams[0].counters()["dropped_per_epoch"] == 4
    summary = streams[0].epoch_summary()
    assert "the last 4 samples of each epoch's order" in summary and "not trained on" in summary
    assert summary.endswith("a global batch that divides 100, e.g. batch=20, trains on every sample")
    all_keys = set(split_100.keys)
    for epoch in (0, 1):
        assert sum(delivered[epoch].values()) == 96 and max(delivered[epoch].values()) == 1
    assert all_keys - set(delivered[0]) != all_keys - set(delivered[1])


def test_iteration_ends_at_the_epoch_end_and_the_position_names_the_next_epoch(split_100):
    (stream,) = rank_streams(split_100, world_size=1, global_batch_size=25)

    first = [(b.epoch, b.step) for b in stream]
    position_after_first = (stream.epoch, stream.step_in_epoch)
    second = [(b.epoch, b.step) for b in stream]

    assert first == [(0, s) for s in range(4)]
    assert position_after_first == (1, 0)
    assert second == [(1, s) for s in range(4)]


def test_a_dataset_smaller_than_one_global_batch_is_refused(split_100):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        rank_streams(split_100, world_size=1, global_batch_size=128)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs a CUDA device")
def test_pinned_batches_keep_shape_and_values_and_reach_the_gpu(split_100):
    (stream,) = rank_streams(split_100, world_size=1, global_batch_size=10)
    batch = next(iter(stream))

    pinned = batch.pin_memory()

    assert pinned.images.is_pinned() and pinned.targets.is_pinned()
    assert torch.equal(pinned.images, batch.images) and pinned.images.stride() == batch.images.stride()
    on_gpu = pinned.images.to("cuda", non_blocking=True).float()
    assert torch.equal(on_gpu.cpu(), batch.images.float())
