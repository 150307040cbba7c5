"""What the trainer keeps to recover from a bad stretch: the last good snapshot, the rollbacks made, the LR cool-down
after one, and the data windows a rollback skipped.

The guard's monitor (guard/monitor.py) decides *that* a rollback is due; this says what one does to the run's state
and keeps the record of it. Its counters are part of the trainer's (`Trainer.state_dict`, trainer.json's
"counters"); the snapshot itself is a host copy and is not checkpointed: a resume starts from a checkpoint, which is
good by definition, and snapshots it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from yolotr.checkpoint.host_stage import HostStager
from yolotr.config.run import GuardConfig
from yolotr.guard.ema import ModelEMA
from yolotr.guard.snapshot import Snapshot, restore_snapshot, take_snapshot


@dataclass
class Rollback:
    """A rollback made: what the run's records say of it."""

    restored_step: int
    restored_applied_steps: int
    skipped_window: list[int]


@dataclass
class Recovery:
    guard: GuardConfig
    snapshot: Snapshot | None = None
    rollbacks: int = 0
    backoff_until: int = -1  # steps before this one run at guard.lr_backoff × the LR
    skipped_windows: list[list[int]] = field(default_factory=list)
    clean_since_snapshot: bool = True  # no step skipped since the snapshot: the state now is a good one to keep
    _stager: HostStager = field(default_factory=HostStager)

    def state_dict(self) -> dict:
        return {"backoff_until": self.backoff_until, "skipped_windows": self.skipped_windows,
                "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.backoff_until = int(state["backoff_until"])
        self.skipped_windows = [list(w) for w in state["skipped_windows"]]
        self.rollbacks = int(state["rollbacks"])

    def lr_factor(self, step: int) -> float:
        """The LR multiplier while cooling down after a rollback."""
        return self.guard.lr_backoff if step < self.backoff_until else 1.0

    def take_snapshot(self, step: int, applied_steps: int, model: nn.Module, optimizer, ema: ModelEMA | None) -> None:
        """A host copy of the state: what a rollback restores."""
        self.snapshot = take_snapshot(step, applied_steps, model, optimizer, ema, self._stager)

    def mark_skipped(self) -> None:
        """A judged step was skipped: the next snapshot is not taken from this stretch."""
        self.clean_since_snapshot = False

    def after_judged(self, step: int, applied_steps: int, model: nn.Module, optimizer, ema: ModelEMA | None) -> None:
        """Every `guard.snapshot_every` steps, keeps the state when no step was skipped since the last snapshot."""
        if step % self.guard.snapshot_every == 0:
            if self.clean_since_snapshot or self.snapshot is None:
                self.take_snapshot(step, applied_steps, model, optimizer, ema)
            self.clean_since_snapshot = True

    def roll_back(self, step: int, model: nn.Module, optimizer, ema: ModelEMA | None) -> Rollback:
        """Restores the last good snapshot, records the data window since then as skipped (the stream only moves
        forward) and starts a cool-down. The caller has checked that there is a snapshot."""
        assert self.snapshot is not None
        restore_snapshot(self.snapshot, model, optimizer, ema)
        window = [self.snapshot.step + 1, step]
        self.skipped_windows.append(window)
        self.backoff_until = step + self.guard.cooldown_steps
        self.rollbacks += 1
        self.clean_since_snapshot = True
        return Rollback(self.snapshot.step, self.snapshot.applied_steps, window)
