"""Progress for a log file: where a terminal gets tqdm's bar, output that is not a TTY gets one line per epoch and
at least one per `interval_s`, as YOLOv5 prints into a log, so that a run of hours shows signs of life.

It takes the part of tqdm's interface the trainer uses (`n`, `set_postfix`, `refresh`, `close`), so either can be the
trainer's progress object.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any, TextIO

DEFAULT_INTERVAL_S = 60.0


class LineProgress:
    def __init__(self, total: int, initial: int = 0, *, interval_s: float = DEFAULT_INTERVAL_S,
                 stream: TextIO | None = None) -> None:
        self.total = total
        self.n = initial
        self.interval_s = interval_s
        self.stream = stream if stream is not None else sys.stderr
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
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        done = self.n - self._first_step
        rate = done / max(now - self._started, 1e-9)  # steps per second since this process started
        eta = timedelta(seconds=round((self.total - self.n) / rate)) if rate > 0 else "?"
        fields = " ".join(f"{key} {value}" for key, value in self._postfix.items())
        return f"[yolotr] step {self.n}/{self.total} ({100 * self.n / max(self.total, 1):.1f}%) {fields} eta {eta}"

    def close(self) -> None:
        pass
