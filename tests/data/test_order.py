"""The global order of an epoch and its cut into steps and ranks (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from yolotr.data.order import check_batch_split, epoch_order, local_positions

SIZES = [7, 7, 7, 3, 11, 1, 7]


def test_epoch_order_is_a_permutation_of_all_samples():
    order = epoch_order(SIZES, seed=0, epoch=0, window_shards=2)

    assert sorted(order.tolist()) == list(range(sum(SIZES)))


def test_epoch_order_is_a_pure_function_of_seed_epoch_and_index():
    first = epoch_order(SIZES, seed=3, epoch=5, window_shards=2)
    again = epoch_order(SIZES, seed=3, epoch=5, window_shards=2)

    assert np.array_equal(first, again)
    assert not np.array_equal(first, epoch_order(SIZES, seed=3, epoch=6, window_shards=2))
    assert not np.array_equal(first, epoch_order(SIZES, seed=4, epoch=5, window_shards=2))


def test_each_window_of_the_order_draws_from_at_most_window_shards_shards():
    starts = np.concatenate([[0], np.cumsum(SIZES)])
    shard_of = np.searchsorted(starts, np.arange(sum(SIZES)), side="right") - 1
    order = epoch_order(SIZES, seed=1, epoch=0, window_shards=3)

    position = 0
    seen_shards: set[int] = set()
    # Walk the order; a window ends once it has consumed all samples of its (at most 3) shards.
    while position < len(order):
        shards = set()
        remaining = 0
        while position < len(order) and (not shards or remaining > 0):
            shard = int(shard_of[order[position]])
            if shard not in shards:
                assert len(shards) < 3, "a window mixes more than window_shards shards"
                assert shard not in seen_shards, "a shard's samples are spread over two windows"
                shards.add(shard)
                remaining += SIZES[shard]
            remaining -= 1
            position += 1
        seen_shards |= shards


def test_ranks_take_contiguous_equal_slices_of_each_global_step():
    slices = [local_positions(4, rank=r, world_size=3, global_batch_size=12) for r in range(3)]

    assert [list(s) for s in slices] == [list(range(48, 52)), list(range(52, 56)), list(range(56, 60))]


def test_a_global_batch_not_divisible_by_the_world_size_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="not divisible by the world size 4"):
        check_batch_split(global_batch_size=10, world_size=4, rank=0)
    with pytest.raises(ValueError, match="rank 2"):
        check_batch_split(global_batch_size=8, world_size=2, rank=2)
