"""A process that writes this rank's checkpoint files, so that serialising them costs the training loop nothing.

DCP serialises one tensor at a time in Python (about 0.14 ms each: 180 ms for yolotr-n's 1,281 tensors). In a thread
that time is taken from the training loop through the GIL: on an H200, async saves every 10 steps still made steps
52% slower, against 72% for synchronous saves. In a process it is not.

The state travels through shared memory: the trainer stages it into a `HostStager(shared=True)`; the writer receives
the stager's flat buffers once (again only when they are reallocated), and per save only the layout when it changed,
the plain values, the metadata and the target folder. It ignores preemption signals (a stop must not kill a save in
flight), exits when the trainer closes it or dies (end of file on its pipe), and if it is gone the trainer writes in
its own writer thread instead. A writer that is there and does not answer (stopped with SIGSTOP, swapped out, stuck
in a hung file system) fails the save after `checkpoint.writer_timeout_s`, naming its pid: the trainer stops with
exit.json and a retryable code instead of waiting for it forever.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from yolotr.checkpoint.files import write_rank_files
from yolotr.checkpoint.host_stage import HostStager, Layout
from yolotr.checkpoint.manager import CheckpointError

log = logging.getLogger(__name__)

# Launchers and Slurm signal the whole process group; the writer leaves the reaction to the trainer.
START_WITHIN_S = 120.0
"""How long the writer may take to start (a spawn imports torch: seconds, a minute on a loaded machine)."""
_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _serve(conn) -> None:
    """The writer's loop: ("buffers", {dtype: tensor}), ("save", tmp, rank, layout | None, plain, meta), ("stop",)."""
    for sig in _IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    conn.send(("ready",))  # its imports done: from now on each save is answered within checkpoint.writer_timeout_s
    buffers: dict | None = None
    layout: Layout | None = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            return
        if message[0] == "stop":
            return
        if message[0] == "buffers":
            buffers = message[1]
            continue
        _, tmp, rank, new_layout, plain, meta = message
        layout = new_layout or layout
        assert layout is not None and buffers is not None  # the first save sends both
        try:
            written = write_rank_files(layout.rebuild(buffers, plain), meta, rank, Path(tmp))
            conn.send(("ok", [str(p) for p in written]))
        except BaseException:  # reported by the trainer, which fails the checkpoint on every rank
            conn.send(("error", traceback.format_exc()))


class WriterProcess:
    """The trainer's side. `write()` runs in the checkpoint manager's background thread and waits (without holding
    the GIL) until the writer has written the files; the manager then fsyncs and hashes them."""

    def __init__(self, answer_within_s: float = 300.0) -> None:
        self.answer_within_s = answer_within_s
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        self._generation = -1
        self._layout: Layout | None = None
        self.failed: str | None = None  # why it is not used any more (the thread writes instead)
        self.stalled = False  # it did not answer in time (see _stalled)
        self._ready = False  # it has said it started

    def write(self, stager: HostStager, plain: list, meta: dict, rank: int, tmp: Path) -> list[Path]:
        if self.failed is None and stager.shared:  # not shared: /dev/shm had no room (host_stage.py)
            try:
                return self._write_in_process(stager, plain, meta, rank, tmp)
            except (EOFError, OSError) as exc:
                self.failed = f"the checkpoint writer process is gone ({exc!r}); writing in a thread from now on"
                log.warning(self.failed)
            except _WriterError as exc:
                raise CheckpointError(f"writing {tmp} failed in the writer process:\n{exc}") from None
        return ThreadWriter().write(stager, plain, meta, rank, tmp)

    def _write_in_process(self, stager: HostStager, plain: list, meta: dict, rank: int, tmp: Path) -> list[Path]:
        self.start()
        conn = self._conn
        assert conn is not None  # start() made it
        stager.publish()
        if not self._ready:
            if not conn.poll(max(START_WITHIN_S, self.answer_within_s)):
                raise self._stalled(max(START_WITHIN_S, self.answer_within_s))
            conn.recv()
            self._ready = True
        self._wait_until_running()  # a send to a stopped writer blocks once its pipe is full
        if stager.generation != self._generation:
            conn.send(("buffers", stager.buffers))
            self._generation = stager.generation
        layout = stager.layout if stager.layout is not self._layout else None
        conn.send(("save", str(tmp), rank, layout, plain, meta))
        self._layout = stager.layout
        if not conn.poll(self.answer_within_s):
            raise self._stalled(self.answer_within_s)
        status, payload = conn.recv()
        if status != "ok":
            raise _WriterError(payload)
        return [Path(p) for p in payload]

    def _wait_until_running(self) -> None:
        deadline = time.monotonic() + self.answer_within_s
        while self._proc is not None and self._proc.pid is not None and _is_stopped(self._proc.pid):
            if time.monotonic() > deadline:
                raise self._stalled(self.answer_within_s)
            time.sleep(0.1)

    def _stalled(self, waited_s: float) -> WriterStalled:
        self.stalled = True
        pid = self._proc.pid if self._proc is not None else None
        self.failed = (f"checkpoint writer pid {pid} has not answered for {waited_s:g} s (stopped?); "
                       "checkpoint.writer_timeout_s sets how long a save may wait for it")
        return WriterStalled(self.failed)

    def start(self) -> None:
        """Starts the writer; the first save does it, from the manager's writer thread, so neither the trainer's
        start-up nor its loop waits for the writer's imports."""
        if self._proc is not None:
            if not self._proc.is_alive():
                raise EOFError(f"exit code {self._proc.exitcode}")
            return
        from multiprocessing import resource_tracker

        import torch.multiprocessing as mp

        # spawn, not fork: the trainer holds CUDA contexts and threads. The child inherits this thread's signal mask
        # across exec, so a preemption signal cannot kill it before it has set its handlers.
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # multiprocessing starts its resource tracker on the first spawn and *unblocks* SIGINT and SIGTERM after
        # doing so: start it first, so that the mask below holds when the writer is created.
        resource_tracker.ensure_running()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _IGNORED_SIGNALS)
        try:
            self._ready = False
            self._proc = ctx.Process(target=_serve, args=(child,), name="yolotr-checkpoint-writer", daemon=True)
            with _main_module_not_rerun():
                self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        child.close()
        # At interpreter exit multiprocessing stops daemon children with SIGTERM, which the writer ignores, and then
        # joins them: stop it first (atexit runs handlers in reverse order of registration, multiprocessing's first).
        atexit.register(self.close)

    def close(self) -> None:
        if self._proc is None:
            return
        if self.stalled:
            self.kill()  # it would not read "stop": a stopped process answers nothing, and SIGKILL ends it anyway
            return
        try:
            if self._conn is not None:
                self._conn.send(("stop",))
        except OSError:
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
        self._proc = None


    def kill(self) -> None:
        """Stopping at once: the save it may be writing goes into a `.tmp` folder that is never committed."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=5)
            self._proc = None


_SPAWN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_not_rerun():
    """A spawned child first runs the parent's main script again (as `__mp_main__`), so that functions defined there
    can be unpickled; a user's script without an `if __name__ == "__main__":` guard would then train a second time
    inside the writer. The writer needs nothing of that script (its target and messages are yolotr's and torch's),
    so its preparation data leaves the main module out (swapped only while the writer starts, under a lock)."""
    from multiprocessing import spawn

    prepare = spawn.get_preparation_data

    def without_main(name: str) -> dict:
        data = prepare(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _SPAWN_LOCK:
        spawn.get_preparation_data = without_main
        try:
            yield
        finally:
            spawn.get_preparation_data = prepare


class ThreadWriter:
    """`checkpoint.writer: thread`: the files are written by the checkpoint manager's background thread itself."""

    def write(self, stager: HostStager, plain: list, meta: dict, rank: int, tmp: Path) -> list[Path]:
        stager.publish()
        assert stager.layout is not None  # made by the stage() before any write
        return write_rank_files(stager.layout.rebuild(stager.buffers, plain), meta, rank, tmp)

    def close(self) -> None:
        pass

    def kill(self) -> None:
        pass


class _WriterError(RuntimeError):
    pass


class WriterStalled(RuntimeError):
    """The writer process is alive and has not answered within checkpoint.writer_timeout_s."""


def _is_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP, SIGTSTP) or traced: /proc's state T or t (Linux; elsewhere never)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")
