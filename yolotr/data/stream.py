"""The training stream: equal batches on every rank, and exact resume on any number of ranks and workers.

Design (see `order.py` for the order itself): one global cursor, the position (epoch, step_in_epoch), over a
deterministic global order. Global step s is positions [s·G, (s+1)·G) of the epoch order and rank r reads its
contiguous G/W of them, so a position means the same samples whatever the world size or worker count; resuming
from a saved position on 2→1, 1→2 or 2→4 ranks trains each remaining sample of the epoch exactly once. Resuming
seeks with the index's byte offsets, so the first batch after a resume costs the same at any position.

The position is counted here, in the training process, from batches actually handed out: DataLoader workers build
batches ahead of time and never know what was consumed. It always names the next batch to hand out; after the
last batch of epoch e it is (e + 1, 0).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from yolotr.config.augment import AugmentConfig
from yolotr.data.batch import Batch, BatchReport, ValBatch
from yolotr.data.device_batch import render_batch
from yolotr.data.error_budget import ErrorBudget
from yolotr.data.errors import DataErrorBudgetExceeded, StreamStateError
from yolotr.data.index import SplitIndex
from yolotr.data.order import check_batch_split, epoch_order, order_digest
from yolotr.data.prefetch import DEFAULT_DEPTH, LoaderClock
from yolotr.data.producers import TrainBatches, TrainPlan, iterate_loader
from yolotr.data.val_stream import ValStream

__all__ = ["Batch", "ValBatch", "TrainStream", "ValStream", "StreamStateError", "DataErrorBudgetExceeded"]

log = logging.getLogger("yolotr.data")

STATE_VERSION = 1


class TrainStream:
    """Local batches of one rank, epoch after epoch; `for batch in stream` runs from the position to the epoch end."""

    def __init__(self, split: SplitIndex, *, global_batch_size: int, rank: int, world_size: int, seed: int,
                 imgsz: int, augment: AugmentConfig | None, num_workers: int = 0, shuffle_window_shards: int = 4,
                 max_error_fraction: float = 0.01, quarantine: Iterable[str] = (), pin_memory: bool = False,
                 render_device: torch.device | None = None, prefetch: int | None = None) -> None:
        check_batch_split(global_batch_size, world_size, rank)
        if split.num_samples < global_batch_size:
            raise ValueError(f"{split.index_file}: {split.num_samples} samples are fewer than one global batch "
                             f"({global_batch_size}); lower the batch size or add data")
        if shuffle_window_shards < 1:
            raise ValueError(f"shuffle_window_shards must be >= 1, got {shuffle_window_shards}")
        self.split = split
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.imgsz = imgsz
        self.augment = augment
        self.num_workers = num_workers
        self.shuffle_window_shards = shuffle_window_shards
        self.pin_memory = pin_memory
        # Batches each worker builds ahead: `prefetch`, or chosen for each new loader from the timings (prefetch.py).
        self.prefetch = prefetch
        self.prefetch_depth = DEFAULT_DEPTH if prefetch is None else prefetch
        self.clock = LoaderClock()
        # train.augment_on: device: workers plan, this process decodes and renders on this device (device_batch.py)
        self.render_device = render_device if augment is not None else None
        if self.render_device is not None and rank == 0:
            log.info("data: workers plan the augmentation; each rank decodes and renders its batches on %s",
                     self.render_device.type)
        self.local_batch_size = global_batch_size // world_size
        self.steps_per_epoch = split.num_samples // global_batch_size
        self.dropped_per_epoch = split.num_samples % global_batch_size
        self.epoch = 0
        self.step_in_epoch = 0
        self._quarantine: set[str] = set(quarantine)
        self._budget = ErrorBudget(max_error_fraction=max_error_fraction,
                                   min_seen=self.steps_per_epoch * self.local_batch_size)
        self._quarantined = 0
        self._samples_delivered = 0
        self._batches_delivered = 0
        self._samples_skipped = 0
        self._partner_dropped = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        # Only the newest iteration delivers: a new `iter(stream)` or load_state_dict() retires older ones.
        self._generation = 0
        self._moved = False
        self._summary_said = False

    # ---- iteration -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[Batch]:
        self._generation += 1
        generation, epoch = self._generation, self.epoch
        if not self._summary_said:  # the same every epoch: once per run is enough
            log.info("data: %s", self.epoch_summary())
            self._summary_said = True
        # Restarts only when skip_to() moved the position while a DataLoader was running ahead.
        while self.epoch == epoch and generation == self._generation:
            self._moved = False
            loader = iterate_loader(TrainBatches(self._plan(epoch, self.step_in_epoch)),
                                    num_workers=self.num_workers, pin_memory=self.pin_memory,
                                    prefetch_factor=self._choose_prefetch_depth())
            try:
                asked = time.perf_counter()
                for batch, report in loader:
                    if generation != self._generation:
                        return
                    batch = self._deliver(batch, report)
                    handed = time.perf_counter()
                    self.clock.handed_out(handed - asked, report.build_s)
                    yield batch
                    asked = time.perf_counter()
                    self.clock.consumed(asked - handed)
                    if self._moved:
                        break
            finally:
                loader.close()
            if not self._moved and self.epoch == epoch and generation == self._generation:
                raise RuntimeError(f"the loader stopped at epoch {epoch} step {self.step_in_epoch} of "
                                   f"{self.steps_per_epoch}")

    def _choose_prefetch_depth(self) -> int | None:
        """The new loader's prefetch depth (None without workers): `prefetch`, or from the timings so far."""
        if self.num_workers == 0:
            return None
        if self.prefetch is None:
            depth = self.clock.depth(workers=self.num_workers,
                                     batch_bytes=self.local_batch_size * self.imgsz * self.imgsz * 3)
            if depth != self.prefetch_depth and self.rank == 0:
                log.info("data: each of %d worker(s) now builds %d batches ahead (was %d): %s", self.num_workers,
                         depth, self.prefetch_depth, self.clock.describe())
            self.prefetch_depth = depth
        return self.prefetch_depth

    def _plan(self, epoch: int, first_step: int) -> TrainPlan:
        return TrainPlan(split=self.split, order=self._order(epoch), epoch=epoch, first_step=first_step,
                         stop_step=self.steps_per_epoch, rank=self.rank, world_size=self.world_size,
                         global_batch_size=self.global_batch_size, seed=self.seed, imgsz=self.imgsz,
                         augment=self.augment, quarantine=frozenset(self._quarantine),
                         plan_only=self.render_device is not None)

    def _deliver(self, batch: Batch, report: BatchReport) -> Batch:
        if (batch.epoch, batch.step) != (self.epoch, self.step_in_epoch):
            raise RuntimeError(f"batch of epoch {batch.epoch} step {batch.step} arrived at position "
                               f"({self.epoch}, {self.step_in_epoch}); the delivery order is broken")
        self._quarantined += report.quarantined
        batch = self._drop_quarantined(batch)
        if batch.images is None:
            batch = self._render(batch, report)
        self._budget.count(report)
        self._samples_delivered += len(batch.keys)
        self._batches_delivered += 1
        # Advance before handing the batch out: a checkpoint taken while the trainer holds it must resume after it.
        self.step_in_epoch += 1
        if self.step_in_epoch == self.steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
        return batch

    def _drop_quarantined(self, batch: Batch) -> Batch:
        """Quarantine added after a worker built this batch still applies (mosaic partners already used stay)."""
        keep = [i for i, key in enumerate(batch.keys) if key not in self._quarantine]
        self._quarantined += len(batch.keys) - len(keep)
        return batch.select(keep)

    def _render(self, batch: Batch, report: BatchReport) -> Batch:
        """A planned batch's images, decoded and rendered on the render device; what fails there joins `report`."""
        assert self.render_device is not None  # only planned batches (augment_on: device) are rendered
        rendered = render_batch(batch, self.render_device, self.imgsz)
        report.errors.extend((err.key or "", err.reason, err.detail) for err in rendered.errors)
        if rendered.partner_dropped:
            self._partner_dropped += len(rendered.partner_dropped)
            log.warning("dropped %d image(s) whose mosaic partner failed to decode on %s: %s",
                        len(rendered.partner_dropped), self.render_device, ", ".join(rendered.partner_dropped))
        return rendered.batch

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            sizes = [shard.samples for shard in self.split.shards]
            self._order_cache = (epoch, epoch_order(sizes, seed=self.seed, epoch=epoch,
                                                    window_shards=self.shuffle_window_shards))
        return self._order_cache[1]

    # ---- position and state ------------------------------------------------------------------------------

    def epoch_summary(self) -> str:
        n = self.split.num_samples
        text = (f"{n} train samples, global batch {self.global_batch_size} = {self.world_size} rank(s) x "
                f"{self.local_batch_size}: {self.steps_per_epoch} steps per epoch")
        if not self.dropped_per_epoch:
            return text
        # Full batches only: every rank takes the same number of steps, and a position (epoch, step) means the same
        # samples at any resume.
        text += (f"; the last {self.dropped_per_epoch} samples of each epoch's order (other ones each epoch) are not "
                 f"trained on, so that every batch is full")
        dividing = [size for size in range(self.world_size, n + 1, self.world_size) if n % size == 0]
        closest = min(dividing, key=lambda size: abs(size - self.global_batch_size), default=None)
        if closest is not None and self.global_batch_size / 4 <= closest <= 4 * self.global_batch_size:
            text += f": a global batch that divides {n}, e.g. batch={closest}, trains on every sample"
        return text

    def skip_to(self, epoch: int, step_in_epoch: int) -> None:
        """Moves the position forward (never back), e.g. past a window of bad steps after a model rollback."""
        if step_in_epoch == self.steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
        if not 0 <= step_in_epoch < self.steps_per_epoch:
            raise ValueError(f"step_in_epoch {step_in_epoch} is not in [0, {self.steps_per_epoch}]")
        here = self.epoch * self.steps_per_epoch + self.step_in_epoch
        there = epoch * self.steps_per_epoch + step_in_epoch
        if there < here:
            raise ValueError(f"skip_to({epoch}, {step_in_epoch}) would move back from "
                             f"({self.epoch}, {self.step_in_epoch}); the position only moves forward")
        self._samples_skipped += (there - here) * self.local_batch_size
        self.epoch, self.step_in_epoch = epoch, step_in_epoch
        self._moved = self._moved or there != here

    def add_quarantine(self, keys: Iterable[str]) -> None:
        """Samples to skip from now on (counted as quarantined, not as errors)."""
        self._quarantine.update(keys)

    def state_dict(self) -> dict:
        """The position plus what it is only valid for; plain json types."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_batch_size": self.global_batch_size,
            "seed": self.seed,
            "shuffle_window_shards": self.shuffle_window_shards,
            "dataset_fingerprint": self.split.fingerprint,
            "num_samples": self.split.num_samples,
            "order_digest": order_digest(self._order(self.epoch)),
            "quarantine": sorted(self._quarantine),
        }

    def load_state_dict(self, state: dict) -> None:
        """Resumes at a saved position; raises `StreamStateError` when the state cannot be honoured exactly.
        An iteration running at the time ends; the next `for batch in stream` starts at the loaded position."""
        try:
            version = state["version"]
            epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
            expected = {key: state[key] for key in ("global_batch_size", "seed", "shuffle_window_shards",
                                                     "dataset_fingerprint", "num_samples", "order_digest")}
            quarantine = [str(k) for k in state.get("quarantine", [])]
        except (KeyError, TypeError, ValueError) as err:
            raise StreamStateError(f"stream state is malformed ({err!r}); it was not written by TrainStream") from None
        if version != STATE_VERSION:
            raise StreamStateError(f"stream state version {version} is not {STATE_VERSION}")
        if expected["dataset_fingerprint"] != self.split.fingerprint:
            raise StreamStateError(
                f"the checkpoint's position is over another dataset (fingerprint {expected['dataset_fingerprint']}, "
                f"{expected['num_samples']} samples) than this stream's {self.split.index_file} (fingerprint "
                f"{self.split.fingerprint}, {self.split.num_samples} samples); positions cannot be carried over. "
                f"Resume with the original shards, or start a new run (load weights only).")
        if expected["global_batch_size"] != self.global_batch_size:
            raise StreamStateError(
                f"the checkpoint counted positions in global batches of {expected['global_batch_size']} samples, this "
                f"stream uses {self.global_batch_size}; exact resume needs the same global batch size (a different "
                f"number of ranks is fine: the per-rank batch becomes global / ranks).")
        for key, mine in (("seed", self.seed), ("shuffle_window_shards", self.shuffle_window_shards)):
            if expected[key] != mine:
                raise StreamStateError(f"the checkpoint's {key} is {expected[key]}, this stream's is {mine}; the "
                                       f"sample order would differ, so the position would not mean the same samples")
        if not (epoch >= 0 and 0 <= step < self.steps_per_epoch):
            raise StreamStateError(f"position ({epoch}, {step}) is outside an epoch of {self.steps_per_epoch} steps")
        if order_digest(self._order(epoch)) != expected["order_digest"]:
            raise StreamStateError(f"the sample order of epoch {epoch} differs from the checkpoint's (a numpy change "
                                   f"in random permutations?); the position would not mean the same samples")
        self.epoch, self.step_in_epoch = epoch, step
        self._quarantine = set(quarantine)
        self._generation += 1

    # ---- accounting -------------------------------------------------------------------------------------------

    def counters(self) -> dict:
        """What this rank's stream has delivered and skipped (since it was created; not restored on resume)."""
        return {
            "errors": dict(self._budget.by_reason),
            "errors_total": self._budget.total,
            "quarantined": self._quarantined,
            "dropped_per_epoch": self.dropped_per_epoch,
            "samples_delivered": self._samples_delivered,
            "samples_seen": self._budget.samples_seen,
            "samples_skipped": self._samples_skipped,
            "partner_dropped": self._partner_dropped,
            "batches_delivered": self._batches_delivered,
            "bytes_read": self._budget.bytes_read,
            "unreadable_shards": len(self._budget.unreadable_shards),
        }

    @property
    def error_log(self) -> list[tuple[str, str]]:
        """The most recent (key, reason) of corrupt samples skipped (bounded)."""
        return list(self._budget.log)
