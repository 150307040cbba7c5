"""TensorBoard event files for rank 0, in run_dir/tensorboard: the train and val records of metrics.jsonl as
scalars, under the keys W&B charts (track/record_fields.py), at the record's step and wall time.

- **Resume.** A resume from step N opens its writer with `purge_step=N + 1`: TensorBoard then hides whatever an
  earlier attempt wrote after step N (the records metrics.jsonl supersedes), and the resumed steps appear once.
- **Crashes.** Events are buffered; they are flushed whenever a checkpoint commits, so a crash loses only events after
  the checkpoint it resumes from, which the resume writes again.
- **Optional.** Writing needs the tensorboard package (`pip install 'yolotr[tensorboard]'`). Without it the run says
  so once, as a warning, and goes on: no record sink is worth a stopped training run (W&B falls back the same way).
- A validation at the step of the previous one (the end-of-run validation right after the last epoch's) validated the
  same weights: written once. Events (skips, checkpoints, ...) stay in metrics.jsonl.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolotr.track.record_fields import record_scalars

log = logging.getLogger(__name__)

FLUSH_SECS = 30  # between checkpoints too, so that a live TensorBoard follows the run


class TensorBoardLogger:
    def __init__(self, log_dir: str | os.PathLike, *, resumed_at: int | None) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None
        self._last_val_step: int | None = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            log.warning(f"log.tensorboard: no TensorBoard event files for this run, the tensorboard package is not "
                        f"installed ({error}); pip install 'yolotr[tensorboard]', or set log.tensorboard=false")
            return
        purge_step = None if resumed_at is None else resumed_at + 1
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=FLUSH_SECS)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def log_record(self, record: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        kind, step = record.get("kind"), record.get("step")
        if kind == "event" and record.get("event") == "checkpoint":
            self._writer.flush()  # the events up to a checkpoint are on disk once it has committed
        if kind not in ("train", "val") or step is None:
            return
        if kind == "val":
            if step == self._last_val_step:
                return
            self._last_val_step = step
        for tag, value in record_scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=int(step), walltime=record.get("time"))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
