"""One fan-out for a run's records: each record is written once, and every sink gets it.

`metrics.jsonl` is the source of truth (rank 0 writes it, nothing but Python reads it back); W&B mirrors it. A record
is `{"kind": "train" | "val" | "event", "time", "step", ...}`; `RunLogger.log` returns it as written. Ranks other than
0 hold a RunLogger too and log nothing, so callers need no `if rank == 0`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from yolotr.track.metrics import MetricsWriter
from yolotr.track.wandb_logger import WandbLogger

# Events that also get a line on stderr: the ones a person watching the console must not miss.
CONSOLE_EVENTS = ("rollback", "quarantine", "autoanchor")  # a stop gets a sentence of its own (checkpoint/run_status.py)


class RunLogger:
    def __init__(self, run_dir: str | Path, *, is_main: bool, wandb_enabled: bool, wandb_project: str,
                 wandb_name: str | None, config: dict[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.is_main = is_main
        self._wandb_args = dict(enabled=wandb_enabled, project=wandb_project, name=wandb_name or self.dir.name,
                                config=config)
        self.wandb_run_id: str | None = None  # restored from a checkpoint before `open`, so W&B resumes the run
        self._metrics: MetricsWriter | None = None
        self._wandb: WandbLogger | None = None

    def open(self, resumed_at: int | None = None) -> None:
        """Opens the sinks (rank 0): appends to an existing metrics.jsonl, resumes the W&B run of `wandb_run_id`
        (rewound to `resumed_at`, the step of the checkpoint a resumed start continues from)."""
        if not self.is_main:
            return
        self._metrics = MetricsWriter(self.dir / "metrics.jsonl")
        self._wandb = WandbLogger(self.dir, run_id=self.wandb_run_id, resumed_at=resumed_at, **self._wandb_args)
        self.wandb_run_id = self._wandb.run_id

    @property
    def is_open(self) -> bool:
        return self._metrics is not None

    def log(self, kind: str, **fields: Any) -> dict[str, Any] | None:
        if self._metrics is None:
            return None
        record = self._metrics.write(kind, **fields)
        self._wandb.log_record(record)
        if kind == "event" and fields.get("event") in CONSOLE_EVENTS:
            print(f"[yolotr] {json.dumps(fields)}", file=sys.stderr)
        return record

    def event(self, **fields: Any) -> dict[str, Any] | None:
        return self.log("event", **fields)

    def log_images(self, images, predictions, targets, names, step: int) -> None:
        if self._wandb is not None:
            self._wandb.log_images(images, predictions, targets, names, step=step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._metrics is not None:
            self._metrics.close()

    # The W&B run id travels in the checkpoint, so that a resumed job continues the same W&B run.
    def state_dict(self) -> str | None:
        return self.wandb_run_id

    def load_state_dict(self, run_id: str | None) -> None:
        self.wandb_run_id = run_id
