"""Rank 0's view of training on the console: tqdm's bar on a terminal; in a log file (Slurm output,
`> train.log`), where a bar would be a flood of carriage returns, a line per epoch and per minute
(track/progress_lines.py). Both take the same calls: `n`, `set_postfix`, `refresh`, `close`. Neither with --quiet:
progress is info (yolotr/log.py)."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

from yolotr.log import shows_info
from yolotr.track.progress_lines import LineProgress


class Progress:
    def __init__(self, total: int, initial: int, *, enabled: bool, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self._view = None
        if enabled and shows_info():
            self._view = (tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=stream)
                          if stream.isatty() else LineProgress(total=total, initial=initial))

    def update(self, *, step: int, epoch: int, loss: float | None, images_per_s: float, skipped: int) -> None:
        if self._view is None:
            return
        self._view.n = step
        self._view.set_postfix(epoch=epoch, loss="skipped" if loss is None else f"{loss:.3f}",
                               ips=f"{images_per_s:.0f}", skips=skipped)
        self._view.refresh()

    def close(self) -> None:
        if self._view is not None:
            self._view.close()
