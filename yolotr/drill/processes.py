"""The job's processes, as the supervisor sees them from outside: the launcher it started, the ranks below it (found
in /proc by their RANK variable, whatever the launcher), and the kills.

Launchers start their ranks in sessions of their own (torchrun, accelerate), so a process group is not the job: the
supervisor walks the tree below the launcher, and remembers the ranks it saw, since a rank outlives its launcher as
an orphan when the launcher dies first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # /proc/PID/stat field 22: tells a process from a later one that got its pid

    def alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and int(stat[19]) == self.started and stat[0] != "Z"


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _parents() -> dict[int, int]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = int(stat[1])
    return found


def descendants(root: int) -> list[int]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        frontier = [child for pid in frontier for child in children.get(pid, [])]
        found += frontier
    return found


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"RANK="):
            with contextlib.suppress(ValueError):
                return int(item[5:])
    return None


def ranks_below(root: int) -> dict[int, Proc]:
    """{rank: process} of the training ranks below `root`: the topmost processes that carry a RANK variable (their
    DataLoader workers and checkpoint writers inherit it, and sit below them)."""
    tree = descendants(root)
    marked = {pid: _rank_of(pid) for pid in tree}
    parents = _parents()
    found = {}
    for pid, rank in marked.items():
        if rank is not None and marked.get(parents.get(pid, 0)) is None:
            stat = _stat(pid)
            if stat is not None:
                found[rank] = Proc(pid, int(stat[19]))
    return found


def kill(proc: Proc, sig: int = signal.SIGKILL) -> None:
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def kill_job(launcher: int, ranks: dict[int, Proc]) -> None:
    """kill -9 of every process of the job at once: the launcher, everything below it, and the ranks seen before
    (which may have been orphaned)."""
    pids = [launcher, *descendants(launcher)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for proc in ranks.values():
        kill(proc)


def wait_gone(procs: list[Proc], timeout: float) -> list[Proc]:
    """Waits until every process has exited; returns those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in procs if p.alive()]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in procs if p.alive()]
