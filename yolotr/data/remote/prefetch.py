"""Downloads the next shards of the deterministic order in a background thread, so that a step finds its shards in
the node-local cache instead of waiting for them (`data_wait` in the train records is that wait).

The order of an epoch is known in advance (order.py), so each DataLoader worker (or the training process, without
workers) knows which shards its batches read and when: the thread keeps `prefetch_shards` shards ahead of the
batch being built, and marks the shards from the current batch's to the last prefetched as needed soon, which the
cache's eviction spares. A failure here is left to the reader, which meets it again and reports it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from yolotr.data.index import SplitIndex
from yolotr.data.remote.cache import cache_for, cache_name

log = logging.getLogger(__name__)


class ShardPrefetcher:
    def __init__(self, split: SplitIndex, step_ids: Sequence[tuple[int, np.ndarray]]) -> None:
        """`step_ids`: (step, global ids) of the batches this process builds, in the order it builds them."""
        assert split.remote is not None
        self.split = split
        self.cache = cache_for(split.remote.options)
        self.ahead = split.remote.options.prefetch_shards
        self.shards: list[int] = []  # in the order first needed
        self.needed_through: dict[int, int] = {}  # step -> how many of self.shards it and the steps before need
        self.first_of: dict[int, int] = {}  # step -> index in self.shards of the first shard it reads
        position_of: dict[int, int] = {}
        for step, ids in step_ids:
            mine = dict.fromkeys(int(s) for s in split.shard_of[np.asarray(ids, dtype=np.int64)])
            for shard in mine:
                if shard not in position_of:
                    position_of[shard] = len(self.shards)
                    self.shards.append(shard)
            self.first_of[step] = min((position_of[s] for s in mine), default=len(self.shards))
            self.needed_through[step] = len(self.shards)
        self._allowed = 0
        self._changed = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="yolotr-shard-prefetch", daemon=True)

    def start(self) -> ShardPrefetcher:
        self._thread.start()
        return self

    def building(self, step: int) -> None:
        """The batch of `step` is being built now: download up to `prefetch_shards` beyond the shards it reads."""
        allowed = self.needed_through.get(step, 0) + self.ahead
        names = [cache_name(self.split.shards[s]) for s in self.shards[self.first_of.get(step, 0):allowed]]
        self.cache.soon = set(names)
        with self._changed:
            self._allowed = max(self._allowed, allowed)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join(timeout=1.0)  # a download in flight finishes on its own (daemon thread)

    def _run(self) -> None:
        for position, shard in enumerate(self.shards):
            with self._changed:
                while not self._stopped and position >= self._allowed:
                    self._changed.wait()
                if self._stopped:
                    return
            try:
                self.split.shard_path(shard)
            except Exception as error:  # noqa: BLE001 - the reader meets it again and reports it
                log.debug("data: prefetching %s failed: %s", self.split.shard_location(shard), error)
                return
