"""How long the trainer waits for its batches, and how many each DataLoader worker should build ahead of it.

The stream (stream.py) times three things: the time it takes to hand out a batch (waiting on the workers, plus any
rendering on the device: `wait`), the time the trainer then spends before asking for the next one (its step:
`consume`), and, in the worker, the time to build one batch (`BatchReport.build_s`). The first gives the train
records their `data_wait` share; the other two set the prefetch depth (DataLoader's `prefetch_factor`) of each new
loader, that is of each epoch, when `train.prefetch` is auto.

Why a depth and not more workers: throughput is capped by the slower of the two sides whatever the queue, but a
worker's slow batches (a mosaic of large JPEGs, a cold shard, a CPU shared with other ranks) stall the in-order
DataLoader unless the batches queued behind them cover the delay. So each worker keeps enough batches queued to cover
its slow builds (the 95th percentile) at the trainer's pace, within a memory budget for the queued images.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

DEFAULT_DEPTH = 2  # torch's prefetch_factor: before anything is measured, and the least auto chooses
MAX_DEPTH = 16
QUEUE_MEMORY_BYTES = 2 << 30  # queued batches per rank, all workers together: shared (and pinned) host memory
MIN_SAMPLES = 8  # batches measured before auto moves off the default


def prefetch_depth(*, build_s: list[float], consume_s: list[float], workers: int, batch_bytes: int) -> int:
    """Batches each of `workers` builds ahead: 1 for the batch in hand plus enough to cover a slow build (95th
    percentile of `build_s`) while the trainer takes the median of `consume_s` per batch and the other workers take
    their turns; at least the default, at most MAX_DEPTH and what QUEUE_MEMORY_BYTES holds."""
    if workers < 1 or min(len(build_s), len(consume_s)) < MIN_SAMPLES:
        return DEFAULT_DEPTH
    wanted = 1 + math.ceil(slow_build(build_s) / (workers * max(statistics.median(consume_s), 1e-6)))
    memory_cap = max(QUEUE_MEMORY_BYTES // max(workers * batch_bytes, 1), DEFAULT_DEPTH)
    return max(DEFAULT_DEPTH, min(wanted, MAX_DEPTH, memory_cap))


def slow_build(build_s: list[float]) -> float:
    """The 95th percentile of the build times."""
    return statistics.quantiles(build_s, n=20)[-1] if len(build_s) > 1 else sum(build_s)


class LoaderClock:
    """The stream's timings (recent ones for the depth, totals for the records)."""

    def __init__(self, window: int = 256) -> None:
        self.build_s: deque[float] = deque(maxlen=window)
        self.consume_s: deque[float] = deque(maxlen=window)
        self.wait_total_s = 0.0

    def handed_out(self, wait_s: float, build_s: float) -> None:
        self.wait_total_s += wait_s
        if build_s > 0:
            self.build_s.append(build_s)

    def consumed(self, seconds: float) -> None:
        self.consume_s.append(seconds)

    def depth(self, *, workers: int, batch_bytes: int) -> int:
        return prefetch_depth(build_s=list(self.build_s), consume_s=list(self.consume_s), workers=workers,
                              batch_bytes=batch_bytes)

    def describe(self) -> str:
        """What the depth was chosen from, for the log."""
        return (f"a slow build takes {slow_build(list(self.build_s)):.3f} s, the trainer "
                f"{statistics.median(self.consume_s):.3f} s per batch")
