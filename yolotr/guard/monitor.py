"""The host side of the guard: reads the device verdicts at inspection steps and decides what to do about them.

Per optimizer step the trainer appends a `PendingStep` (device tensors, no sync). At an inspection step the monitor
fetches all pending values with one device→host copy, then for each step in order:
  * skipped → count it, record provenance (which ranks were bad, their sample keys: one small gather, only when the
    window held a skip), count the keys towards quarantine, count consecutive skips;
  * finite → a loss spike (z-score over the recent window of cross-rank mean losses) is trouble too.
Trouble (K consecutive skips, or a spike) asks the trainer to roll back; more than R rollbacks within a window asks it
to stop. Every input of those decisions is identical on all ranks, so every rank decides the same.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field

import torch

from yolotr.config.run import GuardConfig
from yolotr.distributed import all_gather_object
from yolotr.guard.consensus import ConsensusPayload


@dataclass
class PendingStep:
    step: int
    grad_norm: torch.Tensor
    skipped: torch.Tensor
    consensus: torch.Tensor  # the all-reduced ConsensusPayload
    local_bad: torch.Tensor  # this rank's own loss/gradient was non-finite
    keys: list[str]
    images: int
    bad_module: str | None = None  # debug.anomaly_hooks: first module with a non-finite output on this rank
    overflow: torch.Tensor | None = None  # fp16: skipped because the scaled gradient overflowed (guard/loss_scale.py)


@dataclass
class StepOutcome:
    step: int
    grad_norm: float
    skipped: bool
    loss: float
    box: float
    obj: float
    cls: float
    stop_requested: bool
    images: int
    overflow: bool = False


@dataclass
class Verdict:
    outcomes: list[StepOutcome]
    events: list[dict] = field(default_factory=list)
    rollback_reason: str | None = None
    rollback_step: int | None = None
    stop_reason: str | None = None
    new_quarantine: list[str] = field(default_factory=list)
    stop_requested: bool = False


class GuardMonitor:
    def __init__(self, cfg: GuardConfig, rank: int, world_size: int, max_quarantine: int | None = None):
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.rollback_steps: list[int] = []
        self.recent_losses: deque[float] = deque(maxlen=cfg.spike_window)
        self.key_strikes: Counter[str] = Counter()
        self.quarantine: set[str] = set()
        # When every step goes bad the cause is not the data (an LR too high, a broken model): quarantining would
        # empty the dataset. Past this many keys the guard stops quarantining and says so.
        self.max_quarantine = max_quarantine

    def inspect(self, pending: list[PendingStep]) -> Verdict:
        if not pending:
            return Verdict(outcomes=[])
        # One device→host transfer for the whole window: [grad_norm, skipped, overflow, *consensus] per step.
        rows = torch.stack(
            [torch.cat([p.grad_norm.reshape(1), p.skipped.float().reshape(1),
                        (p.overflow if p.overflow is not None else torch.zeros_like(p.skipped)).float().reshape(1),
                        p.consensus.float()]) for p in pending]
        ).cpu()
        local_bad = torch.stack([p.local_bad.reshape(()) for p in pending]).cpu().tolist()
        verdict = Verdict(outcomes=[])
        bad_steps = [p for p, row in zip(pending, rows) if row[1] > 0]
        provenance = self._provenance(bad_steps, {p.step: bool(b) for p, b in zip(pending, local_bad)})
        for p, row in zip(pending, rows):
            c = row[3:]
            outcome = StepOutcome(
                step=p.step,
                grad_norm=float(row[0]),
                skipped=bool(row[1] > 0),
                loss=float(c[ConsensusPayload.LOSS]),
                box=float(c[ConsensusPayload.BOX]),
                obj=float(c[ConsensusPayload.OBJ]),
                cls=float(c[ConsensusPayload.CLS]),
                stop_requested=bool(c[ConsensusPayload.STOP] > 0),
                images=p.images,
                overflow=bool(row[2] > 0),
            )
            verdict.outcomes.append(outcome)
            verdict.stop_requested |= outcome.stop_requested
            if outcome.skipped:
                self._on_skip(outcome, provenance.get(p.step, {}), verdict)
            else:
                self.consecutive_skips = 0
                self._check_spike(outcome, verdict)
            if verdict.rollback_reason:
                break  # the steps after the trouble belong to the window that the rollback skips
        return verdict

    def _provenance(self, bad_steps: list[PendingStep], local_bad: dict[int, bool]) -> dict[int, dict[int, dict]]:
        """{step: {rank: {"keys": [...], "module": name | None}}} for the ranks whose own loss or gradient was non-finite. Only called with a gather
        when the window held a skip, which every rank knows alike."""
        if not bad_steps:
            return {}
        mine = {p.step: {"keys": p.keys, "module": p.bad_module} for p in bad_steps if local_bad[p.step]}
        gathered = all_gather_object(mine)
        result: dict[int, dict[int, dict]] = {}
        for rank, per_step in enumerate(gathered):
            for step, found in per_step.items():
                result.setdefault(step, {})[rank] = found
        return result

    def _on_skip(self, outcome: StepOutcome, bad: dict[int, dict], verdict: Verdict) -> None:
        self.skipped_steps += 1
        if outcome.overflow:
            # fp16's routine: the scale was too large for this gradient and is backed off. No sample is to blame,
            # and a run of them is the scale settling, not trouble to roll back (guard/loss_scale.py).
            verdict.events.append({"event": "skip", "step": outcome.step, "overflow": True,
                                   "grad_norm": _json_float(outcome.grad_norm), "loss": _json_float(outcome.loss),
                                   "bad_ranks": sorted(bad), "skipped_steps": self.skipped_steps})
            return
        self.consecutive_skips += 1
        verdict.events.append(
            {
                "event": "skip",
                "step": outcome.step,
                "grad_norm": _json_float(outcome.grad_norm),
                "loss": _json_float(outcome.loss),
                "bad_ranks": sorted(bad),
                "bad_keys": {str(r): found["keys"] for r, found in sorted(bad.items())},
                "bad_modules": {str(r): found["module"] for r, found in sorted(bad.items()) if found["module"]},
                "skipped_steps": self.skipped_steps,
            }
        )
        for found in bad.values():
            self.key_strikes.update(found["keys"])
        fresh = sorted(
            k for k, n in self.key_strikes.items() if n >= self.cfg.quarantine_after and k not in self.quarantine
        )
        if fresh and self.max_quarantine is not None and len(self.quarantine) + len(fresh) > self.max_quarantine:
            verdict.events.append(
                {"event": "quarantine_capped", "step": outcome.step, "keys_not_quarantined": len(fresh),
                 "quarantined": len(self.quarantine), "limit": self.max_quarantine}
            )
            fresh = []
        if fresh:
            self.quarantine.update(fresh)
            verdict.new_quarantine.extend(fresh)
            verdict.events.append({"event": "quarantine", "step": outcome.step, "keys": fresh})
        if self.consecutive_skips >= self.cfg.max_consecutive_skips:
            verdict.rollback_reason = f"{self.consecutive_skips} consecutive non-finite steps"
            verdict.rollback_step = outcome.step

    def _check_spike(self, outcome: StepOutcome, verdict: Verdict) -> None:
        history = self.recent_losses
        if self.cfg.spike_zscore > 0 and len(history) >= self.cfg.spike_min_history:
            mean = sum(history) / len(history)
            std = math.sqrt(sum((x - mean) ** 2 for x in history) / len(history))
            z = (outcome.loss - mean) / max(std, 1e-8 * max(abs(mean), 1.0))
            if z > self.cfg.spike_zscore:
                verdict.rollback_reason = f"loss spike: {outcome.loss:.4g} is {z:.1f} sigma above the recent mean {mean:.4g}"
                verdict.rollback_step = outcome.step
                return
        history.append(outcome.loss)

    def record_rollback(self, step: int) -> str | None:
        """Counts a rollback about to be made at `step`; returns a stop reason instead when the budget is spent:
        `max_rollbacks` rollbacks within the window already, and trouble again."""
        self.rollback_steps = [s for s in self.rollback_steps if s > step - self.cfg.rollback_window]
        made = len(self.rollback_steps)
        if made >= self.cfg.max_rollbacks:
            return (
                f"trouble again after {made} rollback{'s' if made != 1 else ''} within {self.cfg.rollback_window} "
                f"steps (guard.max_rollbacks={self.cfg.max_rollbacks}): training diverges even after LR back-off"
            )
        self.rollback_steps.append(step)
        self.consecutive_skips = 0
        self.recent_losses.clear()
        return None

    def state_dict(self) -> dict:
        return {
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
            "rollback_steps": list(self.rollback_steps),
            "recent_losses": list(self.recent_losses),
            "key_strikes": dict(self.key_strikes),
            "quarantine": sorted(self.quarantine),
        }

    def load_state_dict(self, state: dict) -> None:
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_skips = int(state["consecutive_skips"])
        self.rollback_steps = [int(s) for s in state["rollback_steps"]]
        self.recent_losses = deque(state["recent_losses"], maxlen=self.cfg.spike_window)
        self.key_strikes = Counter(state["key_strikes"])
        self.quarantine = set(state["quarantine"])


def _json_float(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)
