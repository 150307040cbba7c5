"""Counting corrupt samples in the training process, logging each, and stopping once there are too many."""

from __future__ import annotations

import logging
from collections import Counter, deque

from yolotr.data.batch import BatchReport
from yolotr.data.errors import REASONS, DataErrorBudgetExceeded

log = logging.getLogger("yolotr.data")

ERROR_LOG_LENGTH = 1000


class ErrorBudget:
    """Errors by reason, a bounded log of (key, reason), and the budget check.

    The budget allows `max_error_fraction` of the samples seen, counting at least `min_seen` as seen (one epoch's
    share of this rank): the first corrupt samples of a run do not stop it, a systematically broken dataset stops it
    after that fraction of an epoch, and a rate below the fraction never does.
    """

    def __init__(self, *, max_error_fraction: float | None, min_seen: int) -> None:
        if max_error_fraction is not None and not 0.0 <= max_error_fraction <= 1.0:
            raise ValueError(f"max_error_fraction must be in [0, 1], got {max_error_fraction}")
        self.max_error_fraction = max_error_fraction
        self.min_seen = min_seen
        self.by_reason: Counter[str] = Counter()
        self.log: deque[tuple[str, str]] = deque(maxlen=ERROR_LOG_LENGTH)
        self.unreadable_shards: set[str] = set()
        self.samples_seen = 0
        self.bytes_read = 0

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def count(self, report: BatchReport) -> None:
        """Counts one delivered batch's report; raises `DataErrorBudgetExceeded` when over budget."""
        self.samples_seen += report.samples_seen
        self.bytes_read += report.bytes_read
        for shard in report.unreadable_shards:
            if shard not in self.unreadable_shards:
                self.unreadable_shards.add(shard)
                log.error("shard %s cannot be read; its samples are skipped", shard)
        for key, reason, detail in report.errors:
            self.by_reason[reason] += 1
            self.log.append((key, reason))
            log.warning("skipping corrupt sample %s: %s (%s)", key, reason, detail or REASONS.get(reason, ""))
        if self.max_error_fraction is None or not report.errors:
            return
        allowed = self.max_error_fraction * max(self.samples_seen, self.min_seen)
        if self.total > allowed:
            raise DataErrorBudgetExceeded(errors=self.by_reason, seen=self.samples_seen, allowed=allowed,
                                          examples=list(self.log)[-20:])
