"""One fan-out for a run's records: each record is written once, and every sink gets it.

`metrics.jsonl` is the source of truth (rank 0 writes it, nothing but Python reads it back); W&B, TensorBoard and
results.csv mirror it (wandb.*, log.tensorboard, log.results_csv). A record is `{"kind": "train" | "val" | "event",
"time", "step", ...}`; `RunLogger.log` returns it as written. Ranks other than 0 hold a RunLogger too and log
nothing, so callers need no `if rank == 0`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from yolotr.errors import StorageError
from yolotr.track.metrics import MetricsWriter, read_metrics, supersede_records_after
from yolotr.track.results_csv import ResultsCsv
from yolotr.track.tensorboard_logger import TensorBoardLogger
from yolotr.track.wandb_logger import WandbLogger

log = logging.getLogger(__name__)

# Events that also get a line in the console log, at this level: the ones a person watching must not miss.
CONSOLE_EVENTS = {"rollback": logging.WARNING, "quarantine": logging.WARNING, "autoanchor": logging.INFO}
# (a stop gets a sentence of its own: checkpoint/run_status.py)


def console_line(fields: dict[str, Any]) -> str:
    """An event's console line: AutoAnchor's verdict as a sentence, as YOLOv5 prints it; the others as their record."""
    if fields.get("event") == "autoanchor":
        if fields.get("replaced"):
            return (f"autoanchor: {fields.get('before')} on {fields.get('boxes')} train boxes; new anchors fitted: "
                    f"{fields.get('after')} (saved with the weights)")
        if fields.get("after") is not None:
            return (f"autoanchor: {fields.get('before')} on {fields.get('boxes')} train boxes; a new fit "
                    f"({fields.get('after')}) is no better: the anchors stay")
        return f"autoanchor: {fields.get('before')} on {fields.get('boxes')} train boxes: the anchors fit"
    return json.dumps(fields)


class RunLogger:
    def __init__(self, run_dir: str | Path, *, is_main: bool, wandb_enabled: bool | str, wandb_project: str,
                 wandb_name: str | None, config: dict[str, Any], tensorboard: bool = False,
                 results_csv: bool = False) -> None:
        self.dir = Path(run_dir)
        self.is_main = is_main
        self._wandb_args = dict(enabled=wandb_enabled, project=wandb_project, name=wandb_name or self.dir.name,
                                config=config)
        self._tensorboard_enabled = tensorboard
        self._results_csv_enabled = results_csv
        self.wandb_run_id: str | None = None  # restored from a checkpoint before `open`, so W&B resumes the run
        self._metrics: MetricsWriter | None = None
        self._wandb: WandbLogger | None = None
        self._mirrors: list = []  # TensorBoard, results.csv: `log_record(record)` and `close()`
        self.latest: dict[str, dict[str, Any]] = {}
        """The last record written of each kind (`train`, `val`, `event`), for the API's callbacks (rank 0)."""
        self.failure: StorageError | None = None  # metrics.jsonl could not be written (see `log`)

    def open(self, *, step: int = 0, resumed: bool = False) -> None:
        """Opens the sinks (rank 0): appends to an existing metrics.jsonl, resumes the W&B run of `wandb_run_id`.

        Every start begins at `step` (its checkpoint's, 0 without one) and drops first what an earlier attempt wrote
        after that step, so that every step is recorded once: metrics.jsonl's later records move to
        metrics.superseded.jsonl, results.csv is remade from the records left, TensorBoard hides the later events
        (purge_step), and on a resume the W&B run is rewound to `step`. A start without a checkpoint is no exception:
        an attempt that crashed before its first commit left records of steps that are trained again."""
        if not self.is_main:
            return
        metrics_path = self.dir / "metrics.jsonl"
        supersede_records_after(metrics_path, step)
        self._metrics = MetricsWriter(metrics_path)
        self._wandb = WandbLogger(self.dir, run_id=self.wandb_run_id, resumed_at=step if resumed else None,
                                  **self._wandb_args)
        self.wandb_run_id = self._wandb.run_id
        if self._results_csv_enabled:
            self._mirrors.append(ResultsCsv(self.dir / "results.csv", read_metrics(metrics_path)))
        if self._tensorboard_enabled:
            events = self.dir / "tensorboard"
            # An earlier attempt's events to hide exist only when it wrote some; a first start has none.
            self._mirrors.append(TensorBoardLogger(events, resumed_at=step if events.is_dir() else None))

    @property
    def is_open(self) -> bool:
        return self._metrics is not None

    def log(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        """Writes the record to metrics.jsonl and its mirrors; returns it as written. When metrics.jsonl cannot be
        written (a full disk), the first such error is kept in `failure` and nothing more is written: the trainer
        sees it, and every rank stops with it at the next step (exit 74)."""
        if self._metrics is None or self.failure is not None:
            return None
        try:
            record = self._metrics.write(kind, **fields)
        except StorageError as error:
            self.failure = error
            log.error(f"{error} (the records after this one are not written)")
            return None
        self.latest[kind] = record
        self._wandb.log_record(record)
        for mirror in list(self._mirrors):
            try:
                mirror.log_record(record)
            except OSError as error:  # a mirror only: metrics.jsonl holds the record, the run goes on without it
                log.error(f"{type(mirror).__name__} stopped, it cannot write: {error}")
                self._mirrors.remove(mirror)
                _close_quietly(mirror)
        if kind == "event" and fields.get("event") in CONSOLE_EVENTS:
            log.log(CONSOLE_EVENTS[fields["event"]], console_line(fields))
        return record

    def event(self, **fields: Any) -> dict[str, Any] | None:
        return self.log("event", **fields)

    def log_images(self, images, predictions, targets, names, step: int) -> None:
        if self._wandb is not None:
            self._wandb.log_images(images, predictions, targets, names, step=step)

    def close(self) -> None:
        """Closes every sink, each whatever the others do: a W&B finish or a mirror failing at the end of the run is
        logged in one line and never hides how the run ended."""
        for sink in [self._wandb, *self._mirrors, self._metrics]:
            if sink is not None:
                _close_quietly(sink)

    # The W&B run id travels in the checkpoint, so that a resumed job continues the same W&B run.
    def state_dict(self) -> str | None:
        return self.wandb_run_id

    def load_state_dict(self, run_id: str | None) -> None:
        self.wandb_run_id = run_id


def _close_quietly(sink) -> None:
    close = getattr(sink, "finish", None) or sink.close  # W&B finishes its run
    try:
        close()
    except Exception as error:  # noqa: BLE001 - any sink's failure at close is reported, never raised
        log.error(f"could not close {type(sink).__name__}: {type(error).__name__}: {error}")
