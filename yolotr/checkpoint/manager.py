"""Atomic, asynchronous, elastic checkpoints.

Layout of a run's `checkpoints/` folder:
    step-00000120/            a committed checkpoint (only ever created by a rename)
        manifest.json         every file with its size and sha256; written last, by rank 0
        state/                torch.distributed.checkpoint (model, EMA, optimizer) — world-size independent
        trainer.json          counters, guard and stream state, config, W&B id, code version
        rank-00001.pt         per-rank RNG state (tensors only)
    step-00000150.tmp/        a save in progress (ignored by every reader)
    latest                    name of the newest committed checkpoint (updated with os.replace)

Commit protocol: every rank writes into `step-N.tmp/`, fsyncs and hashes its files (in the background thread, so the
training loop does not wait for sha256) and leaves the hashes in a sidecar; all ranks confirm success (one tiny
all-reduce, only while a save is pending); rank 0 gathers the hashes into `manifest.json`, fsyncs, renames the folder
to `step-N/`, fsyncs the parent, and repoints `latest`. A kill at any moment leaves either the `.tmp` folder (ignored)
or a complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from yolotr.durable_json import write_json_durably
from yolotr.checkpoint.manifest import ManifestError, read_manifest, unlisted_or_missing
from yolotr.checkpoint.run_lock import RunFolderTakenOver
from yolotr.checkpoint.storage import StorageError, free_text, room_problem, storage_problem
from yolotr.distributed import all_gather_object, all_ranks
from yolotr.errors import YolotrError

STEP_DIR = re.compile(r"^step-(\d{8})$")


class CheckpointError(YolotrError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the folder and the reason."""


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HASHES = "hashes-rank-{:05d}.json"  # a rank's sidecar in step-N.tmp/: its files' sizes and sha256, folded into the manifest


@dataclass
class PendingSave:
    step: int
    tmp: Path
    thread: threading.Thread
    error: list[BaseException]
    fitness: float | None
    started: float  # when the training loop began to spend time on this save (perf_counter)
    asynchronous: bool
    stall_s: float = 0.0  # training-loop time spent on this save: staging + launch, then the commit
    write_s: float = 0.0  # background: write, fsync and hash


@dataclass
class CommitStats:
    step: int
    path: Path
    asynchronous: bool
    stall_s: float
    write_s: float


def _file_entry(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


class CheckpointManager:
    def __init__(
        self,
        run_dir: Path,
        *,
        rank: int,
        world_size: int,
        keep_last: int,
        pause_before_commit_s: float = 0,
        pause_from_step: int = 0,
        on_commit: Callable[[CommitStats], None] | None = None,
        fence: Callable[[], None] | None = None,
    ):
        self.root = Path(run_dir) / "checkpoints"
        self.rank = rank
        self.world_size = world_size
        self.keep_last = keep_last
        self.pause_before_commit_s = pause_before_commit_s
        self.pause_from_step = pause_from_step
        self.on_commit = on_commit
        # Rank 0: raises `RunFolderTakenOver` once another job holds the run folder (run_lock.RunLock.check_held);
        # checked before each write that could touch that job's checkpoints.
        self.fence = fence
        self.pending: PendingSave | None = None
        self._finisher: threading.Thread | None = None  # rank 0: the commit landing on disk
        self._landing: tuple[PendingSave, Path] | None = None  # committed, reported once landed
        self._land_error: BaseException | None = None  # rank 0: the last landing failed; every rank hears at commit
        self.root.mkdir(parents=True, exist_ok=True)

    def remove_unfinished_saves(self) -> None:
        """Rank 0, once this job holds the run folder (checkpoint/run_lock.py): saves a crash or a preemption cut
        short are never committed, never read, and checkpoint-sized. Never called by a reader of a live run."""
        for leftover in self.root.glob("step-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)

    # ---------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        *,
        write_rank_files: Callable[[Path], list[Path]],
        write_sync: Callable[[Path], None] | None = None,
        asynchronous: bool = True,
        fitness: float | None = None,
        started: float | None = None,
    ) -> None:
        """Starts a save of step `step` on every rank. `write_sync(tmp)` runs now on every rank (e.g. DeepSpeed's own
        collective save); `write_rank_files(tmp)` writes this rank's already host-staged files and returns them, in a
        background thread when `asynchronous`. The caller has waited for the previous save (`wait()`) before staging
        into buffers that save may still read. `started`: when the caller began (staging), for the stall figure."""
        started = time.perf_counter() if started is None else started
        self.wait()
        # A second save of the same step (e.g. the periodic one, then the one after validation) reuses the folder the
        # previous commit may still be renaming: let that commit land first.
        self._join_finisher()
        tmp = self.root / f"step-{step:08d}.tmp"
        fenced = None
        if self.rank == 0:
            try:
                self._check_fence()  # the job that took the folder over may be saving this very step
            except RunFolderTakenOver as exc:
                fenced = exc
            else:
                shutil.rmtree(tmp, ignore_errors=True)  # left over by a save that was killed
                tmp.mkdir(parents=True)
        if not all_ranks(fenced is None):  # also the barrier: rank 0 made the folder
            self._fail(step, [fenced] if fenced else [])
        if write_sync is not None:
            write_sync(tmp)
        error: list[BaseException] = []

        def work() -> None:
            t0 = time.perf_counter()
            try:
                written = write_rank_files(tmp)
                hashes = {}
                for path in written:
                    _fsync_file(path)
                    hashes[str(path.relative_to(tmp))] = _file_entry(path)
                write_json_durably(tmp / _HASHES.format(self.rank), hashes)
            except BaseException as exc:  # reported at commit time, on the main thread
                error.append(exc)
            pending.write_s = time.perf_counter() - t0

        thread = threading.Thread(target=work, name=f"checkpoint-{step}", daemon=True)
        pending = PendingSave(step, tmp, thread, error, fitness, started, asynchronous)
        self.pending = pending
        thread.start()
        pending.stall_s = time.perf_counter() - started
        if not asynchronous:
            self.wait()

    def poll(self) -> Path | None:
        """At a step boundary: commits the pending save when every rank has finished writing. One tiny all-reduce,
        issued only while a save is pending. Returns the committed folder, if any."""
        if self.pending is None:
            return None
        done = not self.pending.thread.is_alive()
        if not all_ranks(done):
            return None
        return self._commit()

    def wait(self) -> Path | None:
        """Blocks until the pending save is written on every rank and its commit has begun (before the next save
        stages into the buffers that save read). `close()` also waits for the commit to land."""
        if self.pending is None:
            return None
        self.pending.thread.join()
        all_ranks(True)
        return self._commit()

    def _commit(self) -> Path:
        """Every rank: agree that every rank's files are written. Rank 0 then writes the manifest, renames the folder
        and repoints `latest` in a background thread: file system latency (five fsyncs) never stalls training. Commits
        land in order: each first joins the previous one."""
        pending, self.pending = self.pending, None
        assert pending is not None
        t0 = time.perf_counter()
        self._join_finisher()
        land_error, self._land_error = self._land_error, None
        ok = all_ranks(not pending.error and land_error is None)
        if not ok:
            self._fail(pending.step, [*pending.error, *([land_error] if land_error else [])])
        final = self.root / f"step-{pending.step:08d}"
        if self.rank == 0:
            self._finisher = threading.Thread(target=self._land, args=(pending, final), name="checkpoint-commit",
                                              daemon=True)
            self._finisher.start()
        pending.stall_s += time.perf_counter() - t0
        self._landing = (pending, final)
        if not pending.asynchronous:  # a synchronous save returns once its checkpoint is on disk
            self._join_finisher()
        return final

    def _check_fence(self) -> None:
        if self.fence is not None:
            self.fence()

    def _fail(self, step: int | str, errors: list[BaseException]) -> None:
        """Every rank raises the same error: the storage's own message when that is the cause (EXIT_STORAGE), else
        what each rank met. Gathered, so that no rank stops with only a transport error."""
        _raise_if_taken_over(errors)
        mine = [(storage_problem(e, self.root), f"{type(e).__name__}: {e}".splitlines()[-1]) for e in errors]
        found = [(rank, *item) for rank, items in enumerate(all_gather_object(mine)) for item in items]
        storage = next((message for _, message, _ in found if message), None)
        which = f"checkpoint step {step}" if isinstance(step, int) else step
        intact = "the checkpoints before it are intact"
        if storage is not None:
            raise StorageError(f"{which} failed: {storage} ({intact})")
        problems = "; ".join(f"rank {rank}: {text}" for rank, _, text in found)
        raise CheckpointError(f"{which} failed: {problems} ({free_text(self.root)} in {self.root}; {intact})")

    def check_room(self, needed: int) -> None:
        """Before a save (every rank): raises `StorageError` on every rank when the folder cannot take `needed` more
        bytes on some rank (where the file system tells)."""
        problem = room_problem(self.root, needed)
        found = [p for p in all_gather_object(problem) if p]
        if found:
            raise StorageError(f"{found[0]} (the checkpoints before it are intact)")

    def size_of_newest(self) -> int:
        """Bytes of the newest committed checkpoint (from its manifest), 0 when there is none."""
        for path in reversed(self.committed()):
            try:
                files = read_manifest(path).files
            except ManifestError:
                continue
            return sum(entry.size for entry in files.values())
        return 0

    def _land(self, pending: PendingSave, final: Path) -> None:
        try:
            self._land_unguarded(pending, final)
        except BaseException as exc:  # not lost in the thread: the next commit (or close) reports it on every rank
            self._land_error = exc

    def _land_unguarded(self, pending: PendingSave, final: Path) -> None:
        if self.pause_before_commit_s and pending.step >= self.pause_from_step:
            time.sleep(self.pause_before_commit_s)  # test hook: a kill lands in the middle of a save
        self._check_fence()
        manifest = {
            "step": pending.step,
            "world_size": self.world_size,
            "fitness": pending.fitness,
            "files": self._gather_hashes(pending.tmp),
        }
        write_json_durably(pending.tmp / "manifest.json", manifest)
        _fsync_dir(pending.tmp)
        self._check_fence()  # again: writing and hashing took time
        shutil.rmtree(final, ignore_errors=True)
        os.rename(pending.tmp, final)
        _fsync_dir(self.root)
        pointer = self.root / "latest.partial"
        pointer.write_text(final.name + "\n")
        _fsync_file(pointer)
        os.replace(pointer, self.root / "latest")
        _fsync_dir(self.root)
        self._prune()

    def _join_finisher(self) -> None:
        """Waits for the previous commit to land, then reports it (`on_commit`) from the training thread."""
        if self._finisher is not None:
            self._finisher.join()
            self._finisher = None
        if self._landing is None:
            return
        (pending, final), self._landing = self._landing, None
        if self._land_error is not None:
            return  # not reported as a checkpoint: the next commit (or close) raises it
        if not pending.asynchronous:  # the training loop waited for all of it
            pending.stall_s = time.perf_counter() - pending.started
        if self.on_commit is not None:
            self.on_commit(CommitStats(pending.step, final, pending.asynchronous, pending.stall_s, pending.write_s))

    @staticmethod
    def _gather_hashes(tmp: Path) -> dict:
        """Every file's size and sha256: from the ranks' sidecars (hashed in their writer threads), the rest (files
        written collectively, e.g. DeepSpeed's partitions) hashed now. The sidecars themselves are not kept."""
        files: dict = {}
        for sidecar in sorted(tmp.glob(_HASHES.replace("{:05d}", "*"))):
            files.update(json.loads(sidecar.read_text()))
            sidecar.unlink()
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            name = str(path.relative_to(tmp))
            if name not in files:
                _fsync_file(path)  # on disk before the manifest that vouches for it
                files[name] = _file_entry(path)
        return dict(sorted(files.items()))

    def close(self) -> None:
        """Before exit: the pending save written, committed and landed on disk."""
        self.wait()
        self._join_finisher()
        land_error, self._land_error = self._land_error, None
        if not all_ranks(land_error is None):
            self._fail("committing the last checkpoint", [land_error] if land_error else [])

    def abandon(self, land_within_s: float = 5.0) -> None:
        """Stopping at once, without the other ranks: rank 0's commit being landed gets `land_within_s` to finish (a
        kill at any point of it leaves a consistent folder anyway); the pending save is left to its `.tmp`."""
        if self._finisher is not None:
            self._finisher.join(timeout=land_within_s)

    def _prune(self) -> None:
        committed = self.committed()
        best = self.best()
        for path in committed[: -self.keep_last] if self.keep_last > 0 else []:
            if path != best:
                shutil.rmtree(path, ignore_errors=True)

    # ---------------------------------------------------------------- loading
    def committed(self) -> list[Path]:
        """Committed checkpoint folders, oldest first (by step)."""
        return sorted((p for p in self.root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)), key=lambda p: p.name)

    def best(self) -> Path | None:
        scored = []
        for path in self.committed():
            try:
                fitness = read_manifest(path).fitness
            except ManifestError:
                continue
            if fitness is not None:
                scored.append((fitness, path.name, path))
        return max(scored)[2] if scored else None

    def set_aside_newer_than(self, step: int) -> list[Path]:
        """Rank 0, on resuming from `step`: committed checkpoints of later steps (the rest of a run resumed from an
        earlier point) move to checkpoints/abandoned/. Left in place they would count towards keep_last, so pruning
        would delete the resumed run's new checkpoints, and `--resume auto` would pick them again at the next
        restart. Nothing is deleted."""
        return self.move_aside([p for p in self.committed() if _step_of(p) > step], "abandoned")

    def move_aside(self, paths: list[Path], folder: str) -> list[Path]:
        """Moves committed checkpoints into checkpoints/<folder>/ (never deleted): they no longer count as kept, and
        no resume picks them. Returns where they went."""
        moved = []
        for path in paths:
            target = self.root / folder / path.name
            suffix = 1
            while target.exists():
                target, suffix = self.root / folder / f"{path.name}.{suffix}", suffix + 1
            target.parent.mkdir(exist_ok=True)
            os.rename(path, target)
            moved.append(target)
        if moved:
            _fsync_dir(self.root)
        return moved

    def newest_valid(self) -> tuple[Path | None, list[tuple[Path, str]]]:
        """The newest checkpoint whose manifest verifies, and the newer ones that did not, with what is wrong."""
        damaged: list[tuple[Path, str]] = []
        for path in reversed(self.committed()):
            problem = verify(path)
            if problem is None:
                return path, damaged
            damaged.append((path, problem))
        return None, damaged


def _raise_if_taken_over(errors: list[BaseException]) -> None:
    """Every rank: when rank 0's lock was taken over, each raises `RunFolderTakenOver` (exit 2, not retried: a
    retry would meet the other job's lock) with rank 0's message. One gather, on the failure path only."""
    mine = next((str(e) for e in errors if isinstance(e, RunFolderTakenOver)), None)
    found = next((message for message in all_gather_object(mine) if message), None)
    if found is not None:
        raise RunFolderTakenOver(found)


def verify(path: Path) -> str | None:
    """None when the manifest parses (checkpoint/manifest.py), lists exactly the files of the folder, and each has
    its size and sha256; else what is wrong."""
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        return str(exc)
    problem = unlisted_or_missing(path, manifest)
    if problem is not None:
        return problem
    for name, entry in manifest.files.items():
        file = Path(path) / name
        size = file.stat().st_size
        if size != entry.size:
            return f"{name} has {size} bytes, manifest says {entry.size}"
        if _sha256(file) != entry.sha256:
            return f"sha256 mismatch for {name}"
    return None


def _step_of(checkpoint: Path) -> int:
    """The step of a committed checkpoint folder (`committed()` lists only names STEP_DIR matches)."""
    found = STEP_DIR.match(checkpoint.name)
    assert found is not None
    return int(found.group(1))
