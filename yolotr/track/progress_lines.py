"""Progress for a log file: where a terminal gets tqdm's bar, output that is not a TTY gets one line per epoch and
at least one per `interval_s`, as YOLOv5 prints into a log, so that a run of hours shows signs of life. The lines are
info lines of yolotr's log (yolotr/log.py): `[yolotr] step 10/16 (62.5%) epoch 1 loss 0.154 ... eta 0:00:06`.

It takes the part of tqdm's interface the trainer uses (`n`, `set_postfix`, `refresh`, `close`), so either can be the
trainer's progress object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

DEFAULT_INTERVAL_S = 60.0

log = logging.getLogger(__name__)


class LineProgress:
    def __init__(self, total: int, initial: int = 0, *, interval_s: float = DEFAULT_INTERVAL_S,
                 emit: Callable[[str], None] | None = None) -> None:
        self.total = total
        self.n = initial
        self.interval_s = interval_s
        self.emit = emit if emit is not None else log.info
        self._postfix: dict[str, Any] = {}
        self._started = time.monotonic()
        self._first_step = initial
        self._last_line = self._started
        self._last_epoch: Any = None

    def set_postfix(self, **fields: Any) -> None:
        self._postfix = fields

    def refresh(self) -> None:
        """A line when the epoch changed since the last one, when `interval_s` has passed, or at the last step."""
        now = time.monotonic()
        epoch = self._postfix.get("epoch")
        due = (epoch != self._last_epoch or now - self._last_line >= self.interval_s or self.n >= self.total)
        if due:
            self._last_line, self._last_epoch = now, epoch
            self.emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        done = self.n - self._first_step
        rate = done / max(now - self._started, 1e-9)  # steps per second since this process started
        eta = timedelta(seconds=round((self.total - self.n) / rate)) if rate > 0 else "?"
        fields = " ".join(f"{key} {value}" for key, value in self._postfix.items())
        return f"step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.1f}%) {fields} eta {eta}"

    def close(self) -> None:
        pass
