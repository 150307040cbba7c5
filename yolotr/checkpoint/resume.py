"""Where a run resumes from: `checkpoint.resume` (auto, none or a path) against the run folder's checkpoints, and what
the run folder remembers beyond its checkpoints (the quarantine list written after the last one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from yolotr.checkpoint.manager import CheckpointManager, verify, write_json_durably
from yolotr.errors import UsageError


def resume_target(choice: str, manager: CheckpointManager, warn: Callable[[str], None]) -> Path | None:
    """The checkpoint this start resumes from: `auto` = the newest valid one (damaged ones are passed over through
    `warn`), None for a fresh start, or the given path (verified). Decided before the model is wrapped: DeepSpeed
    needs to know."""
    if choice == "none":
        return None
    if choice == "auto":
        return manager.newest_valid(warn=warn)
    path = Path(choice)
    problem = verify(path)
    if problem:
        raise UsageError(f"--resume {path}: {problem}")
    return path


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
