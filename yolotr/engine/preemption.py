"""Preemption notices (SIGTERM, SIGUSR1, ...) and Ctrl-C (SIGINT) only set a flag; the ranks agree on it at the next
step, where it rides in the consensus all-reduce, then checkpoint and exit: 75 for a notice (requeue), 130 for a
Ctrl-C (the user asked for the stop: no launcher retries it).

A second Ctrl-C stops at once (and so does a preemption signal after a Ctrl-C: torchrun answers a second Ctrl-C with
SIGTERM to its ranks): it runs the stop-now action (the trainer's: the commit being landed completes, a save
still being written stays a `.tmp` the next start ignores, exit.json; see `Trainer.stop_now`) and exits 130 without
a traceback or waiting for the other ranks. A launcher script that passes its terminal's Ctrl-C on to its child
makes the child receive the same Ctrl-C twice within milliseconds: a second SIGINT within `SAME_CTRL_C_S` of the
first is that copy, not a second press.

Installed as soon as `yolotr train` has read its config: a notice during start-up (model build, DeepSpeed set-up, a
resume) would otherwise kill the process with the signal's default action, and Slurm would not requeue the job.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from yolotr.errors import EXIT_INTERRUPTED

SAME_CTRL_C_S = 0.5
CTRL_C_FILE_ENV = "YOLOTR_CTRL_C_FILE"
"""Set by launch/launch.sh: a file it creates when its terminal's Ctrl-C reaches it. accelerate answers a Ctrl-C with
SIGTERM to the ranks, which would read as a preemption notice; with the file there, it is the Ctrl-C."""


class PreemptionFlag:
    def __init__(self) -> None:
        self.requested = False
        self.interrupted = False  # the request is a Ctrl-C
        self._first_interrupt: float | None = None
        # What a second Ctrl-C does before the process exits; set by whoever knows the run (train_cli, the trainer).
        self.stop_now: Callable[[], None] | None = None

    def install(self, signal_names: list[str]) -> None:
        for name in signal_names:
            signal.signal(getattr(signal, name), self._request)
        signal.signal(signal.SIGINT, self._interrupt)

    def _request(self, signum, frame) -> None:
        if not self.interrupted and self.launcher_saw_ctrl_c():
            self._interrupt(signum, frame)
            return
        # After a Ctrl-C: torchrun's answer to a second one (or the launcher's death). Within SAME_CTRL_C_S it is the
        # launcher's answer to a copy of the first (launch.sh passes on the Ctrl-C its launcher also received).
        first = self._first_interrupt
        if self.interrupted and first is not None and time.monotonic() - first >= SAME_CTRL_C_S:
            self._stop_now(f"{signal.Signals(signum).name} after Ctrl-C")
        self.requested = True

    @staticmethod
    def launcher_saw_ctrl_c() -> bool:
        marker = os.environ.get(CTRL_C_FILE_ENV)
        return marker is not None and marker != "" and os.path.exists(marker)

    def _interrupt(self, signum, frame) -> None:
        now = time.monotonic()
        if self._first_interrupt is None:
            self._first_interrupt = now
            self.interrupted = self.requested = True
            if os.environ.get("RANK", "0") == "0":  # one line for the job, not one per rank
                _say("yolotr: stopping after this step (Ctrl-C again to stop now)")
            return
        if now - self._first_interrupt >= SAME_CTRL_C_S:
            self._stop_now("second Ctrl-C")

    def _stop_now(self, why: str) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):  # a third press must not interrupt the stop itself
            signal.signal(number, signal.SIG_IGN)
        if os.environ.get("RANK", "0") == "0":
            _say(f"yolotr: stopping now ({why})")
        try:
            if self.stop_now is not None:
                self.stop_now()
        finally:
            exit_now(EXIT_INTERRUPTED)


def _say(line: str) -> None:
    # os.write, not print: a signal handler may run while the main thread is inside a print to the same stream.
    os.write(2, (line + "\n").encode())


def exit_now(code: int) -> None:
    """Ends the process with `code` at once: the log flushed, child processes (DataLoader workers, the checkpoint
    writer) killed, no atexit handlers (they would wait for a writer, or abort on a live process group: "terminate
    called without an active exception"), no traceback."""
    import logging
    import multiprocessing
    import sys

    for child in multiprocessing.active_children():
        try:
            child.kill()
        except OSError:
            pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


PREEMPTION = PreemptionFlag()
