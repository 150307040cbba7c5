"""The worker side of the streams: IterableDatasets that turn planned positions into whole, collated batches.

The torch DataLoader runs them with `batch_size=None`. With k workers, worker j builds batches j, j+k, j+2k, … of
the plan; the DataLoader asks its workers round-robin and returns results in request order, so batches arrive in
plan order whatever k is. Workers prefetch ahead, so they never count the position: the training process does, from
the batches actually delivered (see `stream.py`), using the `BatchReport` that travels with each batch.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment_plan import LabelledSample
from yolotr.data.batch import Batch, BatchReport, ValBatch, build_train_images, build_val_images, plan_train_batch
from yolotr.data.decode import DecodedSample, EncodedSample, decode_sample, encoded_sample
from yolotr.data.errors import SampleError
from yolotr.data.index import SplitIndex
from yolotr.data.order import local_positions
from yolotr.data.remote.prefetch import ShardPrefetcher
from yolotr.data.shard_reader import ShardReader

# Turns one sample's tar members into a usable sample, or raises SampleError: decode_sample (pixels decoded here) or
# encoded_sample (label checked, image bytes kept for a device decoder).
SampleLoader = Callable[..., DecodedSample | EncodedSample]


def read_positions(reader: ShardReader, ids: Sequence[int], *, quarantine: frozenset[str], report: BatchReport,
                   load: SampleLoader = decode_sample) -> list[tuple[int, DecodedSample | EncodedSample]]:
    """Reads and loads samples `ids` (global ids); returns the usable ones with their ids, in the order of `ids`.

    Reads go in global-id order, i.e. by (shard, byte offset): forward seeks only. Corrupt samples are recorded in
    `report` and skipped; quarantined keys are not even read.
    """
    split = reader.split
    decoded: dict[int, DecodedSample | EncodedSample] = {}
    bytes_before = reader.bytes_read
    for global_id in sorted(ids):
        key = split.keys[global_id]
        if key in quarantine:
            report.quarantined += 1
            continue
        try:
            decoded[global_id] = load(key, reader.read(global_id), nc=split.nc)
        except SampleError as err:
            report.errors.append((key, err.reason, err.detail))
    report.samples_seen += len(ids)
    report.bytes_read += reader.bytes_read - bytes_before
    report.unreadable_shards = sorted(reader.unreadable_shards)
    return [(i, decoded[i]) for i in ids if i in decoded]


def _worker_slice(count_from: int, count_to: int) -> range:
    """The items of [count_from, count_to) this process builds: every k-th, starting at its worker id."""
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return range(count_from + worker, count_to, workers)


@dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs to build the batches [first_step, stop_step) of one epoch for one rank."""

    split: SplitIndex
    order: np.ndarray  # (N,) int64 global ids in epoch order
    epoch: int
    first_step: int
    stop_step: int
    rank: int
    world_size: int
    global_batch_size: int
    seed: int
    imgsz: int
    augment: AugmentConfig | None
    quarantine: frozenset[str]
    plan_only: bool = False  # train.augment_on: device: plans and image bytes, no pixels (the stream renders them)


class TrainBatches(IterableDataset):
    def __init__(self, plan: TrainPlan) -> None:
        self.plan = plan

    def __iter__(self) -> Iterator[tuple[Batch, BatchReport]]:
        reader = ShardReader(self.plan.split)
        steps = _worker_slice(self.plan.first_step, self.plan.stop_step)
        prefetcher = self._prefetcher(steps)
        try:
            for step in steps:
                if prefetcher is not None:
                    prefetcher.building(step)
                started = time.perf_counter()
                batch, report = self.build(step, reader)
                report.build_s = time.perf_counter() - started
                yield batch, report
        finally:
            if prefetcher is not None:
                prefetcher.close()
            reader.close()

    def _prefetcher(self, steps: range) -> ShardPrefetcher | None:
        """Remote shards: a thread that downloads the next ones of this worker's batches (remote/prefetch.py)."""
        plan = self.plan
        if plan.split.remote is None or plan.split.remote.options.prefetch_shards <= 0:
            return None
        step_ids = []
        for step in steps:
            positions = local_positions(step, rank=plan.rank, world_size=plan.world_size,
                                        global_batch_size=plan.global_batch_size)
            step_ids.append((step, plan.order[positions.start:positions.stop]))
        return ShardPrefetcher(plan.split, step_ids).start()

    def build(self, step: int, reader: ShardReader) -> tuple[Batch, BatchReport]:
        plan = self.plan
        positions = local_positions(step, rank=plan.rank, world_size=plan.world_size,
                                    global_batch_size=plan.global_batch_size)
        ids = plan.order[positions.start:positions.stop].tolist()
        report = BatchReport()
        load = encoded_sample if plan.plan_only else decode_sample
        usable = read_positions(reader, ids, quarantine=plan.quarantine, report=report, load=load)
        samples = [s for _, s in usable]
        partners = None
        if plan.augment is not None and plan.augment.mosaic > 0 and plan.augment.mosaic_partners == "dataset":
            partners = DatasetPartners(reader, plan.quarantine, decoded=dict(usable), load=load)
        keys = [s.key for s in samples]
        if plan.plan_only:
            assert plan.augment is not None  # a plan-only (device) batch is always augmented
            plans, targets = plan_train_batch(samples, size=plan.imgsz, augment=plan.augment, seed=plan.seed,
                                              epoch=plan.epoch, partners=partners)
            return Batch(images=None, targets=targets, keys=keys, epoch=plan.epoch, step=step, plans=plans), report
        decoded = cast(list[DecodedSample], samples)  # load was decode_sample
        images, targets = build_train_images(decoded, size=plan.imgsz, augment=plan.augment, seed=plan.seed,
                                             epoch=plan.epoch, partners=partners)
        return Batch(images=images, targets=targets, keys=keys, epoch=plan.epoch, step=step), report


class DatasetPartners:
    """Mosaic partners drawn uniformly from the whole split, as YOLOv5 draws them, read by byte offset and decoded
    once per batch. The draw uses the primary's generator, so it depends only on (seed, epoch, primary key).

    A partner that is quarantined or cannot be decoded is replaced by the primary. It is not counted here: it is
    counted, with its reason, when the stream reaches it as a primary sample. `load` is the batch's own loader
    (`encoded_sample` leaves the decoding, and its failures, to the device: device_batch.py)."""

    def __init__(self, reader: ShardReader, quarantine: frozenset[str],
                 decoded: dict[int, DecodedSample | EncodedSample], load: SampleLoader = decode_sample) -> None:
        self.reader = reader
        self.quarantine = quarantine
        self.decoded = decoded  # global id -> sample: the batch's own, then every partner read
        self.load = load

    def __call__(self, rng: np.random.Generator, primary: LabelledSample) -> list[LabelledSample]:
        split = self.reader.split
        return [self._get(int(i), split, primary) for i in rng.integers(0, split.num_samples, 3)]

    def _get(self, global_id: int, split: SplitIndex, primary: LabelledSample) -> LabelledSample:
        if global_id not in self.decoded:
            key = split.keys[global_id]
            if key in self.quarantine:
                return primary
            try:
                self.decoded[global_id] = self.load(key, self.reader.read(global_id), nc=split.nc)
            except SampleError:
                return primary
        return self.decoded[global_id]


@dataclass(frozen=True)
class ValPlan:
    split: SplitIndex
    first_id: int  # this rank's contiguous chunk of the val index: [first_id, stop_id)
    stop_id: int
    batch_size: int
    imgsz: int

    @property
    def num_batches(self) -> int:
        return -(-(self.stop_id - self.first_id) // self.batch_size)


class ValBatches(IterableDataset):
    def __init__(self, plan: ValPlan) -> None:
        self.plan = plan

    def __iter__(self) -> Iterator[tuple[ValBatch, BatchReport]]:
        plan = self.plan
        reader = ShardReader(plan.split)
        try:
            for number in _worker_slice(0, plan.num_batches):
                first = plan.first_id + number * plan.batch_size
                ids = list(range(first, min(first + plan.batch_size, plan.stop_id)))
                report = BatchReport()
                usable = read_positions(reader, ids, quarantine=frozenset(), report=report)
                samples = cast(list[DecodedSample], [s for _, s in usable])  # read_positions decodes by default
                images, targets, ratio_pad = build_val_images(samples, size=plan.imgsz)
                yield ValBatch(
                    images=images, targets=targets, keys=[s.key for s in samples],
                    image_ids=[i for i, _ in usable],
                    orig_sizes=[(int(s.image.shape[0]), int(s.image.shape[1])) for s in samples],
                    ratio_pad=ratio_pad,
                ), report
        finally:
            reader.close()


# Signals a launcher sends to stop a job for preemption (torchrun to each rank's whole process group, Slurm to every
# process of the job), and Ctrl-C (a terminal sends it to its whole foreground group): DataLoader workers receive them
# too.
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP", "SIGINT")


def leave_preemption_to_the_trainer(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a worker ignores preemption signals. Killed by one (SIGTERM's default action, or
    torch's worker handler), it would fail the very batches the trainer needs to reach its checkpoint; the trainer
    handles the signal and shuts its workers down itself (`iterate_loader`)."""
    for name in PREEMPTION_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def iterate_loader(dataset: IterableDataset, *, num_workers: int, pin_memory: bool,
                   prefetch_factor: int | None = None) -> Generator:
    """Runs `dataset` in a fresh DataLoader (`prefetch_factor` batches ahead per worker, torch's default without)
    and shuts its workers down when the caller stops iterating."""
    # A generator of its own: every new iterator draws its workers' base seed from it, and from the process's global
    # RNG without one. A resume starts one more iterator than a run with no stop (the rest of its epoch), so the
    # checkpointed RNG states of the two would differ (the fault drill found it). Nothing here draws from torch's RNG:
    # augmentations are seeded by (seed, epoch, key).
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                        prefetch_factor=prefetch_factor if num_workers > 0 else None,
                        worker_init_fn=leave_preemption_to_the_trainer if num_workers > 0 else None,
                        generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        # Workers may be blocked on a full queue; the iterator's shutdown joins them instead of leaking them.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        # A worker still busy with a batch outlives the shutdown's joins, and ignores its SIGTERM (see above). torch
        # has forgotten its pid by now, so killing it raises nothing; left alive, it would be killed later by
        # `yolotr train`'s exit, while a loader may still watch it ("DataLoader worker is killed by signal").
        for worker in getattr(iterator, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join()
        del iterator
