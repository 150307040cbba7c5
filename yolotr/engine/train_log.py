"""The `train` records of metrics.jsonl: one every `train.log_every` steps, over the steps judged since the last one.

Steps are judged in windows (guard/monitor.py), so a record only ever describes judged steps; on a GPU with
`guard.check_every > train.log_every` a record waits for its steps' verdicts. At any stop (the end, a preemption, a
divergence) the last partial window is written too, so the records, the summary and the stop event agree.
Corrupt samples that the stream skipped are reported here as well: key and reason, a warning from the rank that met
them, as events from rank 0.
"""

from __future__ import annotations

import logging
import math
import time

from yolotr.guard.monitor import StepOutcome
from yolotr.guard.step import clip_factor
from yolotr.track.loggers import RunLogger
from yolotr.track.progress import Progress

log = logging.getLogger(__name__)


class TrainLog:
    def __init__(self, logger: RunLogger, *, world_size: int, max_norm: float,
                 progress: Progress | None) -> None:
        self.logger = logger
        self.max_norm = max_norm
        self.world_size = world_size
        self.progress = progress
        self.window: list[StepOutcome] = []
        self.images_total = 0
        self._window_started = time.perf_counter()
        self._waited_before = 0.0  # the stream's total wait for batches when the window started
        self._data_errors_seen = 0

    def restart_clock(self, stream) -> None:
        """At the first step: the first record's img/s covers training, not the start-up before it."""
        self._window_started = time.perf_counter()
        self._waited_before = stream.clock.wait_total_s

    def add(self, outcomes: list[StepOutcome]) -> None:
        self.window += outcomes

    def write(self, *, step: int, epoch: int, optimizer, stream, skipped_steps: int, rollbacks: int,
              quarantined: int) -> bool:
        """One `train` record over the judged steps of the window. Returns False when no step has been judged yet
        (the window then stays open, and so does its clock)."""
        self.report_data_errors(stream, step)
        outcomes, self.window = self.window, []
        if not outcomes:
            return False
        elapsed = time.perf_counter() - self._window_started
        self._window_started = time.perf_counter()
        waited, self._waited_before = stream.clock.wait_total_s - self._waited_before, stream.clock.wait_total_s
        images = sum(o.images for o in outcomes) * self.world_size
        self.images_total += images
        finite = [o for o in outcomes if not o.skipped]

        def mean(attr: str) -> float | None:  # a window of skipped steps has no loss: null, a bare NaN is not json
            return sum(getattr(o, attr) for o in finite) / len(finite) if finite else None

        # How hard the clip worked over the window's applied steps: the fraction it scaled down, and the mean factor
        # it scaled by (1.0: never). grad_norm and max_norm are both in per-image mean units (guard/step.py).
        factors = [clip_factor(o.grad_norm, self.max_norm) for o in finite]
        last_norm = outcomes[-1].grad_norm
        record = self.logger.log(
            "train",
            step=step,
            epoch=epoch,
            loss=mean("loss"),
            box=mean("box"),
            obj=mean("obj"),
            cls=mean("cls"),
            grad_norm=last_norm if math.isfinite(last_norm) else None,  # skip events say which
            clip_rate=sum(f < 1.0 for f in factors) / len(factors) if factors else None,
            clip_factor=sum(factors) / len(factors) if factors else None,
            images=images,
            lr=[g["lr"] for g in optimizer.param_groups],
            lr_groups=[g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)],
            skipped_steps=skipped_steps,
            rollbacks=rollbacks,
            quarantined=quarantined,
            data_errors=sum(stream.counters().get("errors", {}).values()),
            images_per_s=images / max(elapsed, 1e-9),
            # The share of the window this rank spent waiting for its batches (workers, device rendering): near 0
            # when the data keeps up, the share to win back with more workers or train.augment_on otherwise.
            data_wait=min(waited / max(elapsed, 1e-9), 1.0),
        )
        if record is not None and self.progress is not None:
            self.progress.update(step=step, epoch=epoch, loss=record["loss"], images_per_s=record["images_per_s"],
                                 skipped=skipped_steps)
        return True

    def report_data_errors(self, stream, step: int) -> None:
        """Corrupt samples the stream skipped since the last report."""
        total = stream.counters()["errors_total"]
        fresh, self._data_errors_seen = total - self._data_errors_seen, total
        for key, reason in stream.error_log[-fresh:] if fresh > 0 else []:
            log.warning(f"skipped corrupt sample {key}: {reason}")  # names this rank (yolotr/log.py)
            self.logger.event(event="data_error", step=step, key=key, reason=reason)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
