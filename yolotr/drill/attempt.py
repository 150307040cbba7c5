"""One start of the job through the user's launcher, with at most one attempt-ending fault armed and the pauses due:
the supervisor watches the run folder and, when the run reaches a fault's step, kills a rank, kills the whole job in
the middle of a save's commit, sends the launcher SIGTERM, sends Ctrl-C (once or twice) as a terminal does, or
stops a rank or the whole job for a while and lets it go on. Then it waits for every rank it saw to be gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from yolotr.checkpoint.run_status import recorded_exit_code
from yolotr.drill.plan import Fault
from yolotr.drill.processes import Proc, descendants, kill, kill_job, ranks_below, wait_gone
from yolotr.drill.run_folder import RunFolder, step_of

POLL_S = 0.05
RANKS_EVERY_S = 0.5  # walking /proc is the poll's dearest part: the ranks are looked for less often
RANKS_GONE_S = 120.0  # after the launcher: a rank still running then is killed, and said so
STOPPED_S = 4.0  # how long a paused rank or job stays stopped: many steps' time, far below any timeout
SECOND_SIGINT_S = 0.5  # the second Ctrl-C of sigint_twice, while the first stop is under way


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
    paused: dict[int, int] = field(default_factory=dict)  # {fault index: step} of the pauses done in this attempt
    log: str = ""

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Attempt:
    def __init__(self, number: int, command: list[str], env: dict[str, str], folder: RunFolder, log: Path,
                 fault: Fault | None, world_size: int, stall_timeout: float,
                 pauses: list[Fault] | None = None) -> None:
        self.number = number
        self.command = command
        self.env = env
        self.folder = folder
        self.log = log
        self.fault = fault
        self.world_size = world_size
        self.stall_timeout = stall_timeout
        self.pauses = sorted(pauses or [], key=lambda f: f.step)
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
            due = [f for f in self.pauses if f.index not in result.paused and step >= f.step]
            if due and self._pause(proc, due[0]):
                result.paused[due[0].index] = step
                last_progress = time.monotonic()  # the stop is the fault, not a stall
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
        if fault.kind in ("sigint", "sigint_twice"):
            # A terminal's Ctrl-C goes to its foreground process group: the launcher's (started in a session of
            # its own), which holds whatever the launcher did not move to a session of its own.
            _signal_group(proc.pid, signal.SIGINT)
            if fault.kind == "sigint_twice":
                time.sleep(SECOND_SIGINT_S)
                _signal_group(proc.pid, signal.SIGINT)
            return step
        raise ValueError(f"fault kind {fault.kind} is not done during an attempt")

    def _pause(self, proc: subprocess.Popen, fault: Fault) -> bool:
        """SIGSTOP, STOPPED_S seconds, SIGCONT: of one rank (stop_rank), or of every process of the job, the
        launcher last to stop and first to go on (stop_job, as Ctrl-Z and `fg`). False while the rank is not seen."""
        if fault.kind == "stop_rank":
            victim = self.ranks.get(fault.rank) or ranks_below(proc.pid).get(fault.rank)
            if victim is None:
                return False
            stopped = [victim.pid]
        else:
            stopped = [*reversed(descendants(proc.pid)), proc.pid]
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        time.sleep(STOPPED_S)
        for pid in reversed(stopped):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        return True


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), sig)
