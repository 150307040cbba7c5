"""One start of the job through the user's launcher, with at most one fault armed: the supervisor watches the run
folder and, when the run reaches the fault's step, kills a rank, kills the whole job in the middle of a save's
commit, or sends the launcher SIGTERM. Then it waits for every rank it saw to be gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from yolotr.checkpoint.run_status import recorded_exit_code
from yolotr.drill.plan import Fault
from yolotr.drill.processes import Proc, kill, kill_job, ranks_below, wait_gone
from yolotr.drill.run_folder import RunFolder, step_of

POLL_S = 0.05
RANKS_EVERY_S = 0.5  # walking /proc is the poll's dearest part: the ranks are looked for less often
RANKS_GONE_S = 120.0  # after the launcher: a rank still running then is killed, and said so


@dataclass
class AttemptResult:
    number: int
    started: float  # time.time(), the clock of the run's records
    ended: float = 0.0
    launcher_code: int | None = None
    exit_code: int | None = None  # the trainer's own (RUN/exit.json) when this attempt wrote it, else the launcher's
    fired_at: int | None = None  # the step the run had reached when the fault was done (a save's step for a write)
    last_step: int = 0  # the last step this attempt trained
    stalled: bool = False  # no new step for the stall timeout: the job was killed
    stragglers: list[int] = field(default_factory=list)  # ranks still running after the launcher had exited
    log: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Attempt:
    def __init__(self, number: int, command: list[str], env: dict[str, str], folder: RunFolder, log: Path,
                 fault: Fault | None, world_size: int, stall_timeout: float) -> None:
        self.number = number
        self.command = command
        self.env = env
        self.folder = folder
        self.log = log
        self.fault = fault
        self.world_size = world_size
        self.stall_timeout = stall_timeout
        self.ranks: dict[int, Proc] = {}

    def run(self) -> AttemptResult:
        result = AttemptResult(self.number, started=time.time(), log=str(self.log))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as out:
            out.write("$ " + " ".join(self.command) + "\n")
            out.flush()
            proc = subprocess.Popen(self.command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                self._watch(proc, result)
            finally:
                if proc.poll() is None:  # the supervisor itself is being stopped: leave nothing behind
                    kill_job(proc.pid, self.ranks)
                    proc.wait()
        result.launcher_code = proc.returncode
        left = wait_gone(list(self.ranks.values()), RANKS_GONE_S)
        for straggler in left:
            kill(straggler)
        result.stragglers = [p.pid for p in left]
        result.ended = time.time()
        result.last_step = self.folder.trained_step()
        status = self.folder.exit_status()
        written_now = status is not None and (self.folder.path / "exit.json").stat().st_mtime >= result.started
        recorded = recorded_exit_code(status) if written_now else None  # None: still "running", killed
        result.exit_code = proc.returncode if recorded is None else recorded
        return result

    def _watch(self, proc: subprocess.Popen, result: AttemptResult) -> None:
        last_step, last_progress, ranks_seen = -1, time.monotonic(), 0.0
        while proc.poll() is None:
            if time.monotonic() - ranks_seen > RANKS_EVERY_S:
                self.ranks.update(ranks_below(proc.pid))
                ranks_seen = time.monotonic()
            step = self.folder.trained_step(since=result.started)
            if step != last_step:
                last_step, last_progress = step, time.monotonic()
            if self.fault is not None and result.fired_at is None:
                result.fired_at = self._maybe_fire(proc, step, result.started)
            if time.monotonic() - last_progress > self.stall_timeout:
                result.stalled = True
                kill_job(proc.pid, self.ranks)
                break
            time.sleep(POLL_S)
        proc.wait()

    def _maybe_fire(self, proc: subprocess.Popen, step: int, started: float) -> int | None:
        fault = self.fault
        if fault.kind == "kill_during_write":
            saving = self.folder.committing(fault.step, self.world_size, since=started)
            if saving is None:
                return None
            kill_job(proc.pid, self.ranks)
            return step_of(saving.with_suffix(""))
        if step < fault.step:
            return None
        if fault.kind == "kill_rank":
            victim = self.ranks.get(fault.rank) or ranks_below(proc.pid).get(fault.rank)
            if victim is not None:
                kill(victim)
            elif self.world_size == 1 and not self.ranks:  # one process, started without a launcher: it is the rank
                os.kill(proc.pid, signal.SIGKILL)
            else:
                return None  # not seen yet: the next poll
            return step
        if fault.kind == "sigterm":
            proc.send_signal(signal.SIGTERM)
            return step
        raise ValueError(f"fault kind {fault.kind} is not done during an attempt")
