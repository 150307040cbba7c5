"""Where a run resumes from: `checkpoint.resume` (auto, none or a path) against the run folder's checkpoints, and what
the run folder remembers beyond its checkpoints (the quarantine list written after the last one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from yolotr.durable_json import write_json_durably
from yolotr.checkpoint.manager import CheckpointManager, verify
from yolotr.distributed import broadcast_from_rank0, rank
from yolotr.errors import EXIT_NO_VALID_CHECKPOINT, UsageError, YolotrError


class NoValidCheckpoint(YolotrError):
    """A run to continue has checkpoints, and not one of them verifies: continuing from step 0 would silently throw
    the run away, so the job stops instead (and launchers do not retry it)."""

    exit_code = EXIT_NO_VALID_CHECKPOINT


def resume_target(choice: str, manager: CheckpointManager, warn: Callable[[str], None]) -> Path | None:
    """The checkpoint this start resumes from, the same on every rank (rank 0 decides): `auto` = the newest valid
    one, None for a fresh start, or the given path (verified). Decided before the model is wrapped: DeepSpeed needs
    to know.

    With `auto`, damaged checkpoints (manifest, size or sha256 wrong) move to checkpoints/damaged/ with a warning,
    so that they never count as kept nor make pruning delete a valid one; when checkpoints exist and none is valid,
    `NoValidCheckpoint`. Starting over is the user's explicit choice: `checkpoint.resume=none` (a new run folder)."""
    if choice == "none":
        return None
    if choice != "auto":
        path = Path(choice)
        problem = verify(path)
        if problem:
            raise UsageError(f"--resume {path}: {problem}")
        return path
    decision: tuple[str, str | None] | None = None
    if rank() == 0:
        found, damaged = manager.newest_valid()
        moved = manager.move_aside([path for path, _ in damaged], "damaged")
        for (path, problem), target in zip(damaged, moved):
            then = f"resuming from {found.name}" if found is not None else "no valid checkpoint is left"
            warn(f"checkpoint {path.name} is damaged ({problem}); moved to {target}; {then}")
        if found is None and damaged:
            decision = ("error", f"{manager.root}: every checkpoint is damaged ({len(damaged)}, moved to "
                                 f"{manager.root / 'damaged'}): this run cannot be continued. Start a new run "
                                 "(checkpoint.resume=none), or resume a checkpoint you trust with --resume PATH")
        else:
            decision = ("path", str(found) if found is not None else None)
    kind, value = broadcast_from_rank0(decision)
    if kind == "error":
        raise NoValidCheckpoint(value)
    return Path(value) if value is not None else None


def read_quarantine_file(run_dir: Path) -> list[str]:
    """Keys quarantined after the last checkpoint was written are in the run folder's quarantine.json only: a resume
    keeps skipping them too (every rank reads the same file)."""
    path = Path(run_dir) / "quarantine.json"
    if not path.is_file():
        return []
    try:
        keys = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path}: not valid json ({exc}); fix or delete it to resume") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UsageError(f"{path}: expected a json list of sample keys; fix or delete it to resume")
    return keys


def write_quarantine_file(run_dir: Path, keys: set[str]) -> None:
    """Rank 0, whenever the guard quarantines keys: written atomically, read back by a resume."""
    write_json_durably(Path(run_dir) / "quarantine.json", sorted(keys))
