"""The supervisor of a fault drill: the reference job once, then the faulted job as a sequence of launcher starts,
each with the next attempt-ending fault armed and resumed with `--resume auto`, until it completes; then the final
states compared bit for bit and the ledgers audited (compare.py, ledger_audit.py), and the report (report.py).

Both runs get the same data order and length, and these settings (the drill's, after the user's overrides):

    train.max_steps=M          the plan's length
    train.log_every=1          a train record per step: how the supervisor sees the step the run has reached (the
                               same in both runs: on a GPU it also sets how often verdicts are read)
    debug.sample_ledger=true   the ledger the audit reads
    guard.quarantine_after=10^9  a drilled NaN says nothing about its samples; quarantining them would change the
                               faulted run's data and not the reference's
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from yolotr.config import load_config
from yolotr.drill.attempt import RANKS_GONE_S, STOPPED_S, Attempt, AttemptResult
from yolotr.drill.plan import Fault, Plan, make_plan, steps_needed
from yolotr.drill.run_folder import RunFolder, corrupt, step_of
from yolotr.errors import EXIT_PREEMPTED, RETRYABLE, UsageError

INTERRUPTED = 130  # 128 + SIGINT: a job stopped at once by a second Ctrl-C
STOPPED_BY_CTRL_C = (EXIT_PREEMPTED, INTERRUPTED)  # a Ctrl-C stop checkpoints as a preemption does
MAX_UNEXPECTED = 3  # exits no fault explains, tolerated (and reported) before the run counts as lost
PAUSE_S = 600.0  # the paused commit of a kill-during-write attempt: far longer than it takes to kill it


@dataclass
class DrillOptions:
    config: str | None
    overrides: list[str]
    faults: int
    seed: int
    out: Path
    launcher: list[str]
    kinds: tuple[str, ...]
    steps: int | None = None
    reference_overrides: list[str] = field(default_factory=list)
    stall_timeout: float = 300.0


@dataclass
class FaultRecord:
    fault: Fault
    injected: bool = False
    recovered: bool = False
    steps_lost: int = 0
    attempt: int | None = None
    detail: str = ""
    expect_resume: int | None = None

    def to_json(self) -> dict:
        return {**self.fault.to_json(), "injected": self.injected, "recovered": self.recovered,
                "steps_lost": self.steps_lost, "attempt": self.attempt, "detail": self.detail}


@dataclass
class JobOutcome:
    attempts: list[AttemptResult]
    completed: bool
    problems: list[str]


class Campaign:
    def __init__(self, options: DrillOptions) -> None:
        self.options = options
        self.out = Path(options.out)
        cfg = load_config(options.config, options.overrides)
        self.checkpoint_every = cfg.checkpoint.every
        self.max_steps = options.steps or cfg.train.max_steps or steps_needed(options.faults, self.checkpoint_every)
        self.plan: Plan = make_plan(options.faults, options.seed, max_steps=self.max_steps,
                                    checkpoint_every=self.checkpoint_every, kinds=options.kinds)
        self.records = {f.index: FaultRecord(f) for f in self.plan.faults}
        self.env = {"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120", **os.environ}
        self.world_size = 1

    # ---- the command lines ---------------------------------------------------------------------------------------
    def _command(self, run_dir: Path, extra: list[str]) -> list[str]:
        config = ["--config", self.options.config] if self.options.config else []
        drill = [f"run.dir={run_dir}", f"train.max_steps={self.max_steps}", "train.log_every=1",
                 "debug.sample_ledger=true", "guard.quarantine_after=1000000000"]
        return [*self.options.launcher, *config, *self.options.overrides, *drill, *extra]

    def reference_command(self) -> list[str]:
        skips = sorted(f.step for f in self.plan.nans)
        return self._command(self.out / "reference" / "run",
                             ["checkpoint.resume=none", f"faults.skip_steps={skips}",
                              *self.options.reference_overrides])

    def faulted_command(self, fault: Fault | None) -> list[str]:
        nans = [[f.rank, f.step] for f in self.plan.nans]
        pause = ([f"faults.pause_checkpoint_write_s={PAUSE_S}", f"faults.pause_checkpoint_write_from_step={fault.step}"]
                 if fault is not None and fault.kind == "kill_during_write" else ["faults.pause_checkpoint_write_s=0"])
        return self._command(self.out / "faulted" / "run",
                             ["checkpoint.resume=auto", f"faults.nan_loss_at={nans}", *pause])

    # ---- the two jobs --------------------------------------------------------------------------------------------
    def run_reference(self) -> JobOutcome:
        for name in ("reference", "faulted"):
            if (self.out / name).exists():
                raise UsageError(f"--out {self.out}: {self.out / name} exists already; give the drill a new folder")
        folder = RunFolder(self.out / "reference" / "run")
        result = Attempt(1, self.reference_command(), self.env, folder, self.out / "reference" / "attempt-1.log",
                         None, 1, self.options.stall_timeout).run()
        completed = result.exit_code == 0 and result.last_step == self.max_steps
        problems = [] if completed else [f"the reference run did not complete (exit {result.exit_code} at step "
                                         f"{result.last_step}; {result.log})"]
        self.world_size = folder.world_size() or 1
        self.plan.draw_ranks(self.world_size)
        return JobOutcome([result], completed, problems)

    def run_faulted(self) -> JobOutcome:
        folder = RunFolder(self.out / "faulted" / "run")
        waiting = list(self.plan.ending)
        pauses = list(self.plan.pauses)
        deferred: list[Fault] = []
        attempts: list[AttemptResult] = []
        problems: list[str] = []
        boundary: list[FaultRecord] = []  # faults to judge by the next attempt's start
        unexpected = 0
        while True:
            fault = waiting[0] if waiting else None
            number = len(attempts) + 1
            result = Attempt(number, self.faulted_command(fault), self.env, folder,
                             self.out / "faulted" / f"attempt-{number}.log", fault, self.world_size,
                             self.options.stall_timeout, pauses).run()
            attempts.append(result)
            self._judge_pauses(result)
            pauses = [f for f in pauses if f.index not in result.paused]
            self._judge_boundary(boundary, folder, result)
            boundary = []
            if result.stragglers:
                problems.append(f"attempt {number}: ranks {result.stragglers} still ran {RANKS_GONE_S:.0f} s after their "
                                "launcher exited (killed)")
            if fault is not None and result.fired_at is not None:
                waiting.pop(0)
                boundary, deferred = self._at_boundary(fault, result, folder, deferred)
                continue
            if result.exit_code == 0 and result.last_step == self.max_steps:
                for left in [*waiting, *deferred, *pauses]:
                    self.records[left.index].detail = "not injected: the run completed first"
                return JobOutcome(attempts, True, problems)
            unexpected += 1
            problems.append(f"attempt {number} exited {result.exit_code} at step {result.last_step} with no fault "
                            f"to explain it{' (stalled: killed)' if result.stalled else ''}; see {result.log}")
            retryable = result.exit_code in RETRYABLE or (result.exit_code or 0) > 128 or (result.exit_code or 0) < 0
            if unexpected > MAX_UNEXPECTED or not retryable:
                return JobOutcome(attempts, False, problems)

    # ---- between attempts ----------------------------------------------------------------------------------------
    def _at_boundary(self, fault: Fault, result: AttemptResult, folder: RunFolder,
                     deferred: list[Fault]) -> tuple[list[FaultRecord], list[Fault]]:
        """Records the fault that ended the attempt, then corrupts the newest valid checkpoint for each corruption
        due here (one that would leave no valid checkpoint waits for the next boundary)."""
        record = self.records[fault.index]
        record.injected, record.attempt = True, result.number
        valid = folder.valid()
        newest = step_of(valid[-1]) if valid else 0
        record.steps_lost = max(result.last_step - newest, 0)
        if fault.kind == "kill_during_write":
            save = folder.checkpoints / f"step-{result.fired_at:08d}"
            committed = save.is_dir()
            record.detail = (f"every process killed during the commit of step {result.fired_at}; "
                             + ("it was committed all the same" if committed else "left uncommitted"))
            record.recovered = not committed  # and, once judged, the next start resumes the one before
        elif fault.kind == "sigterm":
            record.detail = f"SIGTERM at step {result.fired_at}; exit {result.exit_code}"
            record.recovered = result.exit_code == EXIT_PREEMPTED
        elif fault.kind == "sigint":
            record.detail = f"Ctrl-C at step {result.fired_at}; exit {result.exit_code}"
            record.recovered = result.exit_code in STOPPED_BY_CTRL_C
        elif fault.kind == "sigint_twice":
            # Stopped at once: no checkpoint is owed, but none may be torn (judged by the next start's resume).
            record.detail = f"Ctrl-C twice at step {result.fired_at}; exit {result.exit_code}"
            record.recovered = result.exit_code != 0
        else:
            record.detail = f"kill -9 of rank {fault.rank} at step {result.fired_at}; exit {result.exit_code}"
            record.recovered = result.exit_code != 0
        judged = [record]
        still: list[Fault] = []
        for damaged in [*deferred, *self.plan.corrupt_after(fault)]:
            valid = folder.valid()
            if len(valid) < 2:
                still.append(damaged)
                continue
            victim, before = valid[-1], valid[-2]
            corrupt(victim)
            damaged.step = step_of(victim)
            crecord = self.records[damaged.index]
            crecord.injected, crecord.attempt = True, result.number
            crecord.steps_lost = step_of(victim) - step_of(before)
            crecord.detail = f"16 bytes flipped in {victim.name}"
            crecord.recovered = True
            judged.append(crecord)
        valid = folder.valid()
        for judged_record in judged:
            judged_record.expect_resume = step_of(valid[-1]) if valid else None
        return judged, still

    def _judge_pauses(self, result: AttemptResult) -> None:
        """A paused rank or job is recovered when the attempt trained on past the step it was stopped at, completed
        there, or was ended by its own armed fault (which then explains the end): a stop is not a reason to end a
        job, and an attempt that ended with no fault to explain it is counted against the pause."""
        for index, step in result.paused.items():
            fault = self.records[index].fault
            record = self.records[index]
            record.injected, record.attempt = True, result.number
            record.recovered = (result.last_step > step or result.fired_at is not None
                                or (result.exit_code == 0 and step >= self.max_steps))
            who = f"rank {fault.rank}" if fault.kind == "stop_rank" else "every process of the job"
            record.detail = (f"SIGSTOP of {who} for {STOPPED_S:.0f} s at step {step}, then SIGCONT; the attempt "
                             f"went on to step {result.last_step} (exit {result.exit_code})")

    def _judge_boundary(self, judged: list[FaultRecord], folder: RunFolder, result: AttemptResult) -> None:
        """The start after a boundary must resume from the newest checkpoint still valid, and pass over (with a
        checkpoint_fallback event) each one that was corrupted."""
        if not judged:
            return
        records = folder.records(since=result.started, until=result.ended)
        resumes = [r["step"] for r in records if r.get("event") == "resume"]
        fallbacks = " ".join(r.get("message", "") for r in records if r.get("event") == "checkpoint_fallback")
        resumed = resumes[0] if resumes else None
        for record in judged:
            # With no valid checkpoint left, the next start begins again from step 0: no resume event at all.
            ok = resumed == record.expect_resume
            if record.fault.kind == "corrupt_checkpoint":
                ok = ok and f"step-{record.fault.step:08d}" in fallbacks
            record.recovered = record.recovered and ok
            record.detail += f"; attempt {result.number} resumed from step {resumed}"

    def judge_nans(self, folder: RunFolder) -> None:
        """A drilled NaN is recovered when the run that survives skipped its step, with the right rank to blame."""
        final = folder.records(superseded=False)
        everywhere = folder.records()
        for fault in self.plan.nans:
            record = self.records[fault.index]
            skips = [r for r in final if r.get("event") == "skip" and r.get("step") == fault.step]
            record.injected = any(r.get("event") == "skip" and r.get("step") == fault.step for r in everywhere)
            record.recovered = bool(skips) and skips[-1].get("bad_ranks") == [fault.rank]
            record.detail = (f"NaN loss on rank {fault.rank} at step {fault.step}; "
                             + (f"skipped, blamed on ranks {skips[-1].get('bad_ranks')}" if skips else "no skip"))
        rollbacks = [r for r in final if r.get("event") == "rollback"]
        for fault in self.plan.nans:
            if rollbacks:
                self.records[fault.index].detail += f"; {len(rollbacks)} rollback(s) in the run"
