"""One job per run folder: `RUN/.lock`, held by rank 0 for the life of the job.

Two jobs writing one folder corrupt each other (the second one's resume deleted the first one's save in progress), so
a start takes the lock first. It must work on shared filesystems, where `flock` is not reliable, so it is a file
created with O_CREAT | O_EXCL (atomic on local filesystems and NFSv3+), naming its holder (host, pid, the pid's start
time, job, generation), and kept fresh by a heartbeat thread that touches it every `lease_s / 4` seconds.

A holder on this host whose process is alive is never taken over, however old its heartbeat: a stopped job (Ctrl-Z,
`kill -STOP`, a debugger) touches nothing, yet resumes writing the moment it is continued. The pid's start time
(from /proc) tells a live holder from a later process that reuses its pid. A lock is stale, and is taken over with a
message saying so, when its holder:
  * runs on this host and its process is gone (a crash, a kill -9), or its pid is now another process;
  * runs on another host, is an earlier attempt of this same job, and this start is its restart (a Slurm requeue);
  * runs on another host and has not touched it for `lease_s` seconds (its host died, or lost the filesystem).
Otherwise the start stops with `RunFolderBusy`, naming the holder.

A holder on another host may only seem gone (a network partition, a long pause), so a takeover fences it: the new
lock's `generation` is one more than the old one's, and before every commit (a checkpoint's rename, the `latest`
pointer) the holder checks that the lock still names it (`check_held`); a holder that was taken over fails that check
with `RunFolderTakenOver` and writes nothing more. (A commit that began just before the takeover can still land: the
check and the rename are two steps; the lease makes that window one of seconds against a minute.)
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
_BEING_WRITTEN_S = 5.0  # an empty lock younger than this is its creator's, between O_EXCL and its write
_RESTART_WAIT_S = 10.0  # how long a restart waits for its earlier attempt on this host to finish exiting


class RunFolderBusy(UsageError):
    """Another live job writes this run folder."""


class RunFolderTakenOver(UsageError):
    """This job's lock was taken over by another job (it judged this one's host gone): this job must stop writing
    the run folder, which is now the other job's."""


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (/proc/PID/stat field 22); None where there is no /proc."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    # A killed rank whose launcher died too is a zombie until something reaps it, and in a container whose PID 1 is
    # no init nothing ever does: kill(pid, 0) still succeeds, but it holds nothing.
    state = _process_state(pid)
    return state not in ("Z", "X")  # None: no /proc (macOS), kill's answer stands


class RunLock:
    def __init__(self, run_dir: str | os.PathLike, *, job: str | None, restart: bool,
                 lease_s: float = LEASE_S, host: str | None = None) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.job = job
        self.restart = restart  # this process restarts `job` (run_folder.this_job)
        self.lease_s = lease_s
        self.holder = {"host": host or socket.gethostname(), "pid": os.getpid(),
                       "started": process_start_time(os.getpid()), "job": job, "since": time.time(), "generation": 1}
        self.taken_over_by: dict | None = None  # set by the heartbeat when another job holds the lock now
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a message when a stale lock was taken over. Raises `RunFolderBusy`."""
        note = None
        if not self._create():
            current = self._read()
            why = self._stale(current)
            if why is None:
                raise RunFolderBusy(self._busy_message(current))
            stale = self.path.with_name(f"{LOCK_FILE}.stale-{time.time():.0f}")
            try:
                os.replace(self.path, stale)
            except FileNotFoundError:
                pass  # its holder released it meanwhile
            # One more than the holder taken over: its commits check the lock and find it no longer theirs.
            self.holder["generation"] = _generation(current) + 1
            if not self._create():  # another start was faster
                raise RunFolderBusy(f"{self.path.parent} was just taken by another job ({_describe(self._read())})")
            stale.unlink(missing_ok=True)
            note = (f"took over the stale lock of {self.path.parent} ({_describe(current)}: {why}); lock generation "
                    f"{self.holder['generation']}")
        self._heartbeat = threading.Thread(target=self._beat, name="run-lock-heartbeat", daemon=True)
        self._heartbeat.start()
        return note

    def check_held(self) -> None:
        """Before a commit: raises `RunFolderTakenOver` when the lock no longer names this job (it was taken over,
        or removed), so that a fenced holder writes nothing more."""
        current = self._read()
        if self._mine(current):
            return
        self.taken_over_by = current
        me = f"pid {self.holder['pid']} on {self.holder['host']}, lock generation {self.holder['generation']}"
        if current:
            whom = (f"it was taken over by {current.get('host')}:{current.get('pid')} (lock generation "
                    f"{_generation(current)}) after this job's lock went untouched for {self.lease_s:.0f} s")
        else:
            whom = f"its lock {self.path} is gone"
        raise RunFolderTakenOver(
            f"{self.path.parent}: this job ({me}) no longer holds the run folder: {whom}; it stops without writing "
            "there. The run goes on in the job that holds the lock; check that job, not this one")

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
            self._heartbeat = None
            if self._mine(self._read()):
                self.path.unlink(missing_ok=True)

    def _mine(self, current: dict) -> bool:
        return all(current.get(key) == self.holder[key] for key in ("host", "pid", "started", "generation"))

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
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _stale(self, current: dict) -> str | None:
        age = time.time() - self._mtime()
        if not current:
            return "unreadable" if age > _BEING_WRITTEN_S else None
        if current.get("host") == self.holder["host"]:
            return self._stale_here(current)
        if self.restart and self.job is not None and current.get("job") == self.job:
            return "an earlier attempt of this job"
        if age > self.lease_s:
            return f"not touched for over {self.lease_s:.0f} s"
        return None

    def _stale_here(self, current: dict) -> str | None:
        """A holder on this host: stale only when its process is gone. A restart of the same job gives its earlier
        attempt a few seconds to finish exiting (its launcher is stopping it)."""
        pid = current.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            return "it names no pid"
        deadline = time.monotonic() + (_RESTART_WAIT_S if self.restart and current.get("job") == self.job else 0)
        while True:
            if not _pid_alive(pid):
                return "its process is gone"
            started, now = current.get("started"), process_start_time(pid)
            if started is not None and now is not None and started != now:
                return f"pid {pid} is now another process"
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)

    def _busy_message(self, current: dict) -> str:
        touched = f"lock touched {time.time() - self._mtime():.0f} s ago"
        if current.get("host") == self.holder["host"] and isinstance(current.get("pid"), int):
            pid = current["pid"]
            stopped = _process_state(pid) in ("T", "t")  # kill -STOP / Ctrl-Z, or a debugger's stop
            how = (f"it is stopped: continue it (kill -CONT {pid}) or end it (kill {pid}), then start again"
                   if stopped else f"wait for it, or end it (kill {pid}), then start again")
            return (f"{self.path.parent} is in use by another job ({_describe(current)}, {touched}; its process is "
                    f"alive{', stopped' if stopped else ''}): two jobs writing one run folder would corrupt each "
                    f"other. A live process on this host is never taken over; {how}, or choose another run.dir")
        return (f"{self.path.parent} is in use by another job ({_describe(current)}, {touched}): two jobs writing "
                f"one run folder would corrupt each other. Wait for it, stop it, or choose another run.dir (a lock "
                f"of another host is taken over once it is {self.lease_s:.0f} s old, run.lock_lease_s)")

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            current = self._read()
            if current and not self._mine(current):
                self.taken_over_by = current  # never keep another job's lock fresh; the next commit stops this job
                return
            try:
                os.utime(self.path)
            except OSError:
                pass  # a full or read-only disk: the save path reports it


def _generation(holder: dict) -> int:
    generation = holder.get("generation", 0)
    return generation if isinstance(generation, int) and not isinstance(generation, bool) else 0


def _describe(holder: dict) -> str:
    if not holder:
        return "holder unknown"
    job = f", job {holder['job']}" if holder.get("job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}"
