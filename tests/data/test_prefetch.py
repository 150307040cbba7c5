"""train.prefetch: the depth each DataLoader worker builds ahead, fixed or chosen per epoch from measured times."""

from __future__ import annotations

import logging
import time

import pytest

import yolotr.data.stream as stream_module
from yolotr.config.augment import AugmentConfig
from yolotr.data.prefetch import DEFAULT_DEPTH, MAX_DEPTH, MIN_SAMPLES, QUEUE_MEMORY_BYTES, prefetch_depth
from yolotr.data.stream import TrainStream

SMALL = 8 * 64 * 64 * 3  # a batch of 8 images at 64 px


def test_the_depth_covers_a_slow_build_at_the_trainers_pace():
    builds = [0.2] * 18 + [1.0, 1.0]  # the 95th percentile is a slow 1.0 s build
    # 4 workers take turns: the trainer at 0.05 s per batch goes through 4 batches in 0.2 s, so a 1.0 s build is
    # covered by 5 batches queued behind it, plus the one in hand.
    assert prefetch_depth(build_s=builds, consume_s=[0.05] * 20, workers=4, batch_bytes=SMALL) == 6
    # Workers with time to spare keep torch's default.
    assert prefetch_depth(build_s=builds, consume_s=[2.0] * 20, workers=4, batch_bytes=SMALL) == DEFAULT_DEPTH


def test_the_depth_stays_within_its_bounds_and_its_memory():
    fast_trainer = {"build_s": [1.0] * 20, "consume_s": [0.001] * 20, "workers": 2}
    assert prefetch_depth(**fast_trainer, batch_bytes=SMALL) == MAX_DEPTH
    batch_640 = 64 * 640 * 640 * 3  # 79 MB: 2 GiB holds 27 of them, 13 per worker
    assert prefetch_depth(**fast_trainer, batch_bytes=batch_640) == QUEUE_MEMORY_BYTES // (2 * batch_640) == 13
    assert prefetch_depth(**fast_trainer, batch_bytes=QUEUE_MEMORY_BYTES) == DEFAULT_DEPTH  # never below torch's
    few = {"build_s": [1.0] * (MIN_SAMPLES - 1), "consume_s": [0.001] * 20, "workers": 2}
    assert prefetch_depth(**few, batch_bytes=SMALL) == DEFAULT_DEPTH  # not measured enough yet
    assert prefetch_depth(**{**fast_trainer, "workers": 0}, batch_bytes=SMALL) == DEFAULT_DEPTH


@pytest.fixture
def loaders(monkeypatch) -> list:
    """The prefetch_factor of every DataLoader the stream starts (real loaders, real workers)."""
    seen = []
    real = stream_module.iterate_loader

    def spy(dataset, **kwargs):
        seen.append(kwargs["prefetch_factor"])
        return real(dataset, **kwargs)

    monkeypatch.setattr(stream_module, "iterate_loader", spy)
    return seen


def run_epochs(stream: TrainStream, epochs: int, step_s: float) -> None:
    for _ in range(epochs):
        for _batch in stream:
            time.sleep(step_s)  # the trainer's step


@pytest.mark.parametrize(("step_s", "deeper"), [(0.0, True), (0.5, False)], ids=["fast-trainer", "slow-trainer"])
def test_auto_sets_each_epochs_depth_from_the_last_ones_times(synth_split, loaders, caplog, step_s, deeper):
    split = synth_split(64, samples_per_shard=32, imgsz=64)
    stream = TrainStream(split, global_batch_size=8, rank=0, world_size=1, seed=0, imgsz=64, augment=AugmentConfig(),
                         num_workers=1)
    with caplog.at_level(logging.INFO, logger="yolotr.data"):
        run_epochs(stream, 1, step_s)
        next(iter(stream))  # the second epoch's loader starts
    assert loaders[0] == DEFAULT_DEPTH  # nothing measured yet
    # The first epoch's 8 batches and the second's first were built; the trainer has not finished that one yet.
    assert (len(stream.clock.build_s), len(stream.clock.consume_s)) == (9, 8)
    # A worker needs milliseconds per batch: a trainer that takes none outruns one worker (the deepest queue), one
    # that takes 0.5 s never waits (torch's default).
    assert (loaders[1] > DEFAULT_DEPTH) is deeper
    assert loaders[1] == stream.prefetch_depth
    changed = [r.getMessage() for r in caplog.records if "batches ahead" in r.getMessage()]
    assert bool(changed) is deeper
    if deeper:
        assert changed[0].startswith(f"data: each of 1 worker(s) now builds {loaders[1]} batches ahead (was 2)")


def test_a_fixed_depth_is_used_as_given_and_none_without_workers(synth_split, loaders):
    split = synth_split(32, samples_per_shard=16, imgsz=64)
    fixed = TrainStream(split, global_batch_size=8, rank=0, world_size=1, seed=0, imgsz=64, augment=None,
                        num_workers=1, prefetch=5)
    run_epochs(fixed, 2, 0.0)
    in_process = TrainStream(split, global_batch_size=8, rank=0, world_size=1, seed=0, imgsz=64, augment=None)
    run_epochs(in_process, 1, 0.0)
    assert loaders == [5, 5, None]  # DataLoader refuses a prefetch_factor without workers
