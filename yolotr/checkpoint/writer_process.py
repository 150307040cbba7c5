"""A process that writes this rank's checkpoint files, so that serialising them costs the training loop nothing.

DCP serialises one tensor at a time in Python (about 0.14 ms each: 180 ms for yolotr-n's 1,281 tensors). In a thread
that time is taken from the training loop through the GIL: on an H200, async saves every 10 steps still made steps
52% slower, against 72% for synchronous saves. In a process it is not.

The state travels through shared memory: the trainer stages it into a `HostStager(shared=True)`; the writer receives
the stager's flat buffers once (again only when they are reallocated), and per save only the layout when it changed,
the plain values, the metadata and the target folder. It ignores preemption signals (a stop must not kill a save in
flight), exits when the trainer closes it or dies (end of file on its pipe), and if it is gone the trainer writes in
its own writer thread instead.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import threading
import traceback
from pathlib import Path

from yolotr.checkpoint.files import write_rank_files
from yolotr.checkpoint.host_stage import HostStager
from yolotr.checkpoint.manager import CheckpointError

log = logging.getLogger(__name__)

# Launchers and Slurm signal the whole process group; the writer leaves the reaction to the trainer.
_IGNORED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _serve(conn) -> None:
    """The writer's loop: ("buffers", {dtype: tensor}), ("save", tmp, rank, layout | None, plain, meta), ("stop",)."""
    for sig in _IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    buffers, layout = None, None
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
        try:
            written = write_rank_files(layout.rebuild(buffers, plain), meta, rank, Path(tmp))
            conn.send(("ok", [str(p) for p in written]))
        except BaseException:  # reported by the trainer, which fails the checkpoint on every rank
            conn.send(("error", traceback.format_exc()))


class WriterProcess:
    """The trainer's side. `write()` runs in the checkpoint manager's background thread and waits (without holding
    the GIL) until the writer has written the files; the manager then fsyncs and hashes them."""

    def __init__(self) -> None:
        self._proc = None
        self._conn = None
        self._generation = -1
        self._layout = None
        self.failed: str | None = None  # why it is not used any more (the thread writes instead)

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
        stager.publish()
        if stager.generation != self._generation:
            self._conn.send(("buffers", stager.buffers))
            self._generation = stager.generation
        layout = stager.layout if stager.layout is not self._layout else None
        self._conn.send(("save", str(tmp), rank, layout, plain, meta))
        self._layout = stager.layout
        status, payload = self._conn.recv()
        if status != "ok":
            raise _WriterError(payload)
        return [Path(p) for p in payload]

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
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()
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
        return write_rank_files(stager.layout.rebuild(stager.buffers, plain), meta, rank, tmp)

    def close(self) -> None:
        pass


class _WriterError(RuntimeError):
    pass
