"""One job per run folder: `RUN/.lock`, held by rank 0 for the life of the job.

Two jobs writing one folder corrupt each other (the second one's resume deleted the first one's save in progress), so
a start takes the lock first. It must work on shared filesystems, where `flock` is not reliable, so it is a file
created with O_CREAT | O_EXCL (atomic on local filesystems and NFSv3+), naming its holder (host, pid, job), and kept
fresh by a heartbeat thread that touches it every `lease_s / 4` seconds. A lock is stale, and is taken over with a
message saying so, when its holder:
  * runs on this host and its pid is gone (a crash, a kill -9);
  * is an earlier attempt of this same job, and this start is its restart (a torchrun restart, a Slurm requeue: the
    earlier attempt's ranks are gone or going);
  * has not touched it for `lease_s` seconds (its host died, or lost the filesystem).
Otherwise the start stops with `RunFolderBusy`, naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from yolotr.errors import UsageError

LOCK_FILE = ".lock"
LEASE_S = 60.0


class RunFolderBusy(UsageError):
    """Another live job writes this run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    # A killed rank whose launcher died too is a zombie until something reaps it, and in a container whose PID 1 is
    # no init nothing ever does: kill(pid, 0) still succeeds, but it holds nothing.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill's answer stands
    return state not in ("Z", "X")


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, *, job: str | None, restart: bool,
                 lease_s: float = LEASE_S) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.job = job
        self.restart = restart  # this process restarts `job` (run_folder.this_job)
        self.lease_s = lease_s
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "job": job, "since": time.time()}
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a message when a stale lock was taken over. Raises `RunFolderBusy`."""
        note = None
        if not self._create():
            current = self._read()
            why = self._stale(current)
            if why is None:
                raise RunFolderBusy(
                    f"{self.path.parent} is in use by another job ({_describe(current)}, lock touched "
                    f"{time.time() - self._mtime():.0f} s ago): two jobs writing one run folder would corrupt each "
                    f"other. Wait for it, stop it, or choose another run.dir (a stale lock is taken over by itself "
                    f"once its holder is gone or {self.lease_s:.0f} s old)")
            stale = self.path.with_name(f"{LOCK_FILE}.stale-{time.time():.0f}")
            try:
                os.replace(self.path, stale)
            except FileNotFoundError:
                pass  # its holder released it meanwhile
            if not self._create():  # another start was faster
                raise RunFolderBusy(f"{self.path.parent} was just taken by another job ({_describe(self._read())})")
            stale.unlink(missing_ok=True)
            note = f"took over the stale lock of {self.path.parent} ({_describe(current)}: {why})"
        self._heartbeat = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return note

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
            if self._read().get("pid") == os.getpid() and self._read().get("host") == self.holder["host"]:
                self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(self.holder, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _stale(self, current: dict) -> str | None:
        if not current:
            return "unreadable"
        if current.get("host") == self.holder["host"] and not _pid_alive(int(current.get("pid", -1))):
            return "its process is gone"
        if self.restart and self.job is not None and current.get("job") == self.job:
            return "an earlier attempt of this job"
        if time.time() - self._mtime() > self.lease_s:
            return f"not touched for over {self.lease_s:.0f} s"
        return None

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or read-only disk: the save path reports it


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    job = f", job {holder['job']}" if holder.get("job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"
