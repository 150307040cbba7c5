"""How a run ended, for scripts and people: RUN/exit.json, the launcher's status file, and one line in the log.

Launchers (torchrun, accelerate) turn any worker failure into their own exit code 1, so a script that must decide
whether to retry reads the real code: from RUN/exit.json (rank 0 writes it at any orderly stop), or from the file
named by `YOLOTR_STATUS_FILE`, which the launch scripts set per node and every node's local rank 0 writes (the run
folder as soon as it is settled, the exit code at the end), so that a retry can resume the same folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from yolotr.durable_json import write_json_durably
from yolotr.errors import (
    EXIT_DATA,
    EXIT_DIVERGED,
    EXIT_NO_VALID_CHECKPOINT,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_STORAGE,
    EXIT_USAGE,
)

log = logging.getLogger(__name__)

STATUS_ENV = "YOLOTR_STATUS_FILE"

_ADVICE = {
    EXIT_PREEMPTED: "checkpoint saved; requeue (run the same command again) to continue",
    EXIT_DIVERGED: "not retried: it would diverge again (lower the LR, or see the skip and rollback events)",
    EXIT_DATA: "not retried: fix or remove the corrupt samples (listed in metrics.jsonl)",
    EXIT_USAGE: "not retried: fix the config or the input",
    EXIT_NO_VALID_CHECKPOINT: "not retried: start a new run, or resume a checkpoint you trust",
    EXIT_STORAGE: "not retried until the run folder can be written again",
}


def write_exit_file(run_dir: Path, code: int, reason: str, step: int) -> None:
    """exit.json, atomically (a temporary file, then a rename). On a disk too full for the temporary file, the start's
    own exit.json (`mark_running`) is overwritten in place instead: its blocks are already allocated, so the code a
    launcher reads still gets there, at the cost of the atomicity a kill during these few bytes would need."""
    path = Path(run_dir) / "exit.json"
    status = {"state": "ended", "exit_code": code, "reason": reason, "step": step}
    try:
        write_json_durably(path, status)
    except OSError as error:
        if not path.is_file():
            raise
        data = json.dumps(status, indent=1, sort_keys=True).encode()
        try:
            with open(path, "r+b") as fh:
                fh.write(data)
                fh.truncate(len(data))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:
            raise error from None


def mark_running(run_dir: Path) -> None:
    """Rank 0 at every start: exit.json says the run is running (`exit_code` null) until this start writes how it
    ended, so that a start killed before it could write (kill -9, a lost node) never leaves an earlier start's
    "completed" in place. Where even this small file cannot be written (a full disk), the old one is removed: no
    answer is better than a wrong one."""
    path = Path(run_dir) / "exit.json"
    try:
        write_json_durably(path, {"state": "running", "exit_code": None, "step": None,
                                  "reason": "running, or killed before it could record how it ended"})
    except OSError:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning(f"cannot mark {path} as running ({error.strerror}): it may still describe an earlier start")


def recorded_exit_code(status: dict | None) -> int | None:
    """The exit code exit.json records, None while it says running (or holds none)."""
    code = status.get("exit_code") if isinstance(status, dict) else None
    return int(code) if isinstance(code, int) and not isinstance(code, bool) else None


def write_status_file(*, run_dir: str | os.PathLike | None = None, exit_code: int | None = None) -> None:
    """Local rank 0 of every node, when the launcher asked (`YOLOTR_STATUS_FILE`): the run folder once it is
    settled, the exit code at the end (each call keeps what an earlier one wrote)."""
    target = os.environ.get(STATUS_ENV)
    if not target or int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    try:
        status = json.loads(Path(target).read_text())
    except (OSError, ValueError):
        status = {}
    if run_dir is not None:
        status["run_dir"] = str(run_dir)
    if exit_code is not None:
        status["exit_code"] = exit_code
    write_json_durably(Path(target), status)


def log_stop(code: int, reason: str, step: int) -> None:
    """The sentence a person reads at the end: why the run stopped, where, and what to do. A preemption is a warning
    and any other stop an error, so that --quiet still shows them."""
    if code == EXIT_OK:
        log.info(f"done at step {step} (exit 0)")
    elif code == EXIT_PREEMPTED:
        log.warning(f"preempted at step {step}: {_ADVICE[code]} (exit {code})")
    else:
        log.error(f"stopped at step {step}: {reason} (exit {code}: {_ADVICE.get(code, 'a retry may succeed')})")
