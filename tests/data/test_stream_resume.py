"""Exact elastic resume: an epoch interrupted at any step and resumed on another number of ranks and DataLoader
workers trains every sample of the epoch exactly once; a state that cannot be honoured is refused with the reason.
Ranks are simulated in one process, which is faithful: a rank's stream depends only on (rank, world size, state)."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from yolotr.config.augment import AugmentConfig
from yolotr.data.errors import StreamStateError
from yolotr.data.order import epoch_order
from yolotr.data.stream import TrainStream

IMGSZ = 32
GLOBAL_BATCH = 8  # 100 samples → 12 steps, 4 dropped


def make_stream(split, *, rank=0, world_size=1, num_workers=0, global_batch_size=GLOBAL_BATCH, seed=0, **kwargs):
    return TrainStream(split, global_batch_size=global_batch_size, rank=rank, world_size=world_size, seed=seed,
                       imgsz=IMGSZ, augment=AugmentConfig(), num_workers=num_workers, **kwargs)


def train_ranks(split, *, world_size, num_workers, state=None, steps=None):
    """Runs every rank for `steps` steps (None: to the epoch end); returns the keys trained on and the state that
    rank 0 would checkpoint (which all ranks must agree on)."""
    keys, states = [], []
    for rank in range(world_size):
        stream = make_stream(split, rank=rank, world_size=world_size, num_workers=num_workers)
        if state is not None:
            stream.load_state_dict(state)
        iterator = iter(stream)
        for count, batch in enumerate(iterator, start=1):
            keys += batch.keys
            if count == steps:
                break
        iterator.close()
        states.append(stream.state_dict())
    assert all(s == states[0] for s in states)
    return keys, states[0]


def expected_epoch_keys(split, epoch=0):
    order = epoch_order([s.samples for s in split.shards], seed=0, epoch=epoch, window_shards=4)
    return Counter(split.keys[i] for i in order[:(split.num_samples // GLOBAL_BATCH) * GLOBAL_BATCH])


@pytest.mark.parametrize("before, after, stop_step", [
    ((2, 0), (1, 2), 3),   # 2 ranks → 1 rank, 0 → 2 workers
    ((1, 2), (2, 0), 5),   # 1 → 2 ranks
    ((2, 1), (4, 2), 1),   # 2 → 4 ranks
    ((2, 2), (4, 1), 11),  # interrupted before the last step
    ((4, 0), (2, 1), 7),
])
def test_an_interrupted_epoch_resumed_elsewhere_trains_each_sample_exactly_once(split_100, before, after, stop_step):
    first_keys, state = train_ranks(split_100, world_size=before[0], num_workers=before[1], steps=stop_step)
    rest_keys, end_state = train_ranks(split_100, world_size=after[0], num_workers=after[1], state=state)

    assert (state["epoch"], state["step_in_epoch"]) == (0, stop_step)
    assert Counter(first_keys + rest_keys) == expected_epoch_keys(split_100)
    assert (end_state["epoch"], end_state["step_in_epoch"]) == (1, 0)


def test_the_position_counts_delivered_batches_not_what_workers_prefetched(split_100):
    stream = make_stream(split_100, num_workers=2)
    iterator = iter(stream)

    next(iterator), next(iterator)  # workers have built more than two batches by now

    assert (stream.epoch, stream.step_in_epoch) == (0, 2)
    iterator.close()


def test_images_do_not_depend_on_the_worker_layout(split_100):
    def images(num_workers):
        return [batch.images.clone() for batch in make_stream(split_100, num_workers=num_workers)]

    for a, b in zip(images(0), images(2)):
        assert np.array_equal(a.numpy(), b.numpy())


def test_skip_to_moves_the_position_forward_even_while_iterating(split_100):
    stream = make_stream(split_100, num_workers=2)
    delivered = []
    for batch in stream:
        delivered.append(batch.step)
        if batch.step == 1:
            stream.skip_to(0, 6)  # the trainer rolled back and skips the bad data window

    assert delivered == [0, 1, 6, 7, 8, 9, 10, 11]
    assert stream.counters()["samples_skipped"] == 4 * GLOBAL_BATCH
    with pytest.raises(ValueError, match="only moves forward"):
        stream.skip_to(0, 3)


@pytest.mark.parametrize("change, reason", [
    ({"global_batch_size": 4}, "global batches of 8"),
    ({"seed": 1}, "seed"),
    ({"shuffle_window_shards": 2}, "shuffle_window_shards"),
])
def test_a_state_from_another_configuration_is_refused_with_the_reason(split_100, change, reason):
    state = make_stream(split_100).state_dict()
    other = make_stream(split_100, **change)

    with pytest.raises(StreamStateError, match=reason):
        other.load_state_dict(state)


def test_a_state_from_another_dataset_is_refused(split_100, synth_split):
    state = make_stream(split_100).state_dict()
    other = make_stream(synth_split(100, samples_per_shard=7, seed=1))

    with pytest.raises(StreamStateError, match="another dataset"):
        other.load_state_dict(state)


def test_a_malformed_or_out_of_range_state_is_refused(split_100):
    stream = make_stream(split_100)
    good = stream.state_dict()

    with pytest.raises(StreamStateError, match="malformed"):
        stream.load_state_dict({"epoch": 0})
    with pytest.raises(StreamStateError, match="outside an epoch"):
        stream.load_state_dict(good | {"step_in_epoch": 99})


def test_the_state_is_plain_json(split_100):
    import json

    state = make_stream(split_100).state_dict()

    assert json.loads(json.dumps(state)) == state


def test_time_and_bytes_to_the_first_batch_do_not_grow_with_the_position(raw_split, jpeg_bytes, make_label):
    image, label = jpeg_bytes(64, 48), make_label([[5, 5, 20, 20]], [0], 64, 48)
    samples = [{"__key__": f"s{i:05d}", "jpg": image, "json": label} for i in range(1600)]
    split = raw_split(samples, samples_per_shard=400)  # 200 steps of 8

    def first_batch(step):
        stream = make_stream(split)
        state = stream.state_dict() | {"step_in_epoch": step}
        stream.load_state_dict(state)
        start = time.perf_counter()
        iterator = iter(stream)
        next(iterator)
        elapsed = time.perf_counter() - start
        iterator.close()
        return elapsed, stream.counters()["bytes_read"]

    early = [first_batch(1) for _ in range(3)]
    late = [first_batch(195) for _ in range(3)]

    early_bytes, late_bytes = early[0][1], late[0][1]
    assert late_bytes < 2 * early_bytes  # a replay would have read ~195x more
    assert min(t for t, _ in late) < 3 * min(t for t, _ in early) + 0.25  # replaying 195 steps takes seconds


def test_a_new_iteration_or_a_loaded_state_retires_the_running_iteration(split_100):
    stream = make_stream(split_100, num_workers=1)
    old = iter(stream)
    next(old)

    fresh = iter(stream)
    assert next(fresh).step == 1
    assert list(old) == []  # the retired iteration delivers nothing more

    state = make_stream(split_100).state_dict() | {"step_in_epoch": 9}
    stream.load_state_dict(state)
    assert list(fresh) == []
    assert [batch.step for batch in stream] == [9, 10, 11]
