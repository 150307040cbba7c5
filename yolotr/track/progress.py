"""Rank 0's view of training on the console: a progress bar on a terminal, a line now and then in a log file.

Without a terminal (Slurm output, `> train.log`) a bar would be a flood of carriage returns, and nothing at all leaves
a person watching the file blind until the run summary: a line every `interval_s` seconds instead, as YOLOv5 prints.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, initial: int, *, enabled: bool, interval_s: float = 30.0,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.interval_s = interval_s
        self._bar = None
        self._last_line = float("-inf")
        self.enabled = enabled
        if enabled and self.stream.isatty():
            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=self.stream)

    def update(self, *, step: int, epoch: int, loss: float | None, images_per_s: float, skipped: int) -> None:
        if not self.enabled:
            return
        loss_text = "skipped" if loss is None else f"{loss:.3f}"
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(epoch=epoch, loss=loss_text, ips=f"{images_per_s:.0f}", skips=skipped)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s or step == self.total:
            self._last_line = now
            print(f"[yolotr] step {step}/{self.total}  epoch {epoch}  loss {loss_text}  "
                  f"{images_per_s:.0f} img/s  skipped {skipped}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
