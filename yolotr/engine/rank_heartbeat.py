"""Which rank a collective waited for: every rank's heartbeat file in the run folder, and the one line that names the
stalled rank when a collective fails (gloo or NCCL timing out, or a peer gone).

A collective that times out says only that it timed out. Each rank therefore keeps `RUN/heartbeats/rank-NNNNN.json`
fresh from a thread (its step, its pid and host, the time): a rank that is stopped (SIGSTOP), lost or frozen stops
beating; a rank that is alive but behind beats at an earlier step. The rank that caught the failure reads the files
and names them; the run then stops with exit.json and a retryable code instead of a raw traceback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

FOLDER = "heartbeats"


def beat_interval_s(collective_timeout_s: float) -> float:
    """Often enough that a stale heartbeat (three intervals) is told from a fresh one well within the timeout."""
    return min(5.0, max(0.2, collective_timeout_s / 10))


class RankHeartbeat:
    """This rank's heartbeat file, rewritten every `interval_s` by a daemon thread; `step()` says where it is."""

    def __init__(self, run_dir: Path, rank: int, interval_s: float, step: Callable[[], int] = lambda: 0) -> None:
        self.path = Path(run_dir) / FOLDER / f"rank-{rank:05d}.json"
        self.interval_s = interval_s
        self.step = step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a missing heartbeat only costs the name of a stalled rank
            log.warning(f"no heartbeat file in {self.path.parent}: {error.strerror}")
            return
        self._beat()
        self._thread = threading.Thread(target=self._run, name="rank-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def _beat(self) -> None:
        record = {"step": self.step(), "time": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
        tmp = self.path.with_name(self.path.name + ".partial")
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a full or read-only folder: the checkpoint path reports it


def stalled_ranks(run_dir: Path, world_size: int, me: int, stale_after_s: float, now: float | None = None) -> list[str]:
    """The ranks this one waited for, each described ("rank 1 (pid 123 on node-a): no heartbeat for 31 s, at step
    12"): first those whose heartbeat is stale or missing, else those behind the others' step."""
    now = time.time() if now is None else now
    beats: dict[int, dict | None] = {}
    for rank in range(world_size):
        try:
            beats[rank] = json.loads((Path(run_dir) / FOLDER / f"rank-{rank:05d}.json").read_text())
        except (OSError, ValueError):
            beats[rank] = None
    stale = [rank for rank, beat in beats.items() if rank != me and (beat is None or now - beat["time"] > stale_after_s)]
    if stale:
        return [_describe(rank, beats[rank], now) for rank in stale]
    steps = {rank: beat["step"] for rank, beat in beats.items() if beat is not None}
    ahead = max(steps.values(), default=0)
    known = {rank: beat for rank, beat in beats.items() if beat is not None}
    return [f"rank {rank} (pid {known[rank]['pid']} on {known[rank]['host']}): at step {step}, behind step {ahead}"
            for rank, step in steps.items() if step < ahead and rank != me]


def _describe(rank: int, beat: dict | None, now: float) -> str:
    if beat is None:
        return f"rank {rank} (no heartbeat file)"
    return (f"rank {rank} (pid {beat['pid']} on {beat['host']}): no heartbeat for {now - beat['time']:.0f} s, at step "
            f"{beat['step']}")
