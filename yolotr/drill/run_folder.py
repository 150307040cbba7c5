"""What the supervisor reads from a live run folder, and the one thing it does to it (a corrupted checkpoint): the
step the run has reached, the records of one attempt, the checkpoints that verify, a save being committed."""

from __future__ import annotations

import json
from pathlib import Path

from yolotr.checkpoint.manager import STEP_DIR, verify

_HASH_SIDECARS = "hashes-rank-*.json"  # checkpoint/manager.py: a rank's files are written once its sidecar is


class RunFolder:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._metrics_seen: tuple[int, int] | None = None
        self._train_steps: list[tuple[float, int]] = []  # (time, step) of metrics.jsonl's train records

    # ---- records -----------------------------------------------------------------------------------------------
    def records(self, *, since: float = 0.0, until: float = float("inf"), superseded: bool = True) -> list[dict]:
        """The records written in [since, until] by the clock of this machine, from metrics.jsonl and (a resume
        moves the records after its checkpoint there) metrics.superseded.jsonl."""
        files = [self.path / "metrics.jsonl"]
        if superseded:
            files.append(self.path / "metrics.superseded.jsonl")
        found = [r for f in files for r in _read_jsonl(f) if since <= r.get("time", 0.0) <= until]
        return sorted(found, key=lambda r: r.get("time", 0.0))

    def trained_step(self, since: float = 0.0) -> int:
        """The last step in a train record written at or after `since` (the drill runs with train.log_every=1): the
        step the attempt started at `since` has reached. The earlier attempts' records stay in metrics.jsonl until the
        new one resumes and supersedes them, so without `since` a fault due at a step the killed attempt had already
        passed would fire at once, before the new attempt has resumed."""
        path = self.path / "metrics.jsonl"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return 0
        if (stat.st_size, stat.st_mtime_ns) != self._metrics_seen:  # read again only when it changed
            self._metrics_seen = (stat.st_size, stat.st_mtime_ns)
            self._train_steps = [(r.get("time", 0.0), r["step"]) for r in _read_jsonl(path) if r.get("kind") == "train"]
        return max((step for time, step in self._train_steps if time >= since), default=0)

    def duplicated_steps(self) -> list[int]:
        """The steps that more than one train record of metrics.jsonl reports: a resume must have superseded the
        records of the steps it trains again, whether or not a checkpoint existed."""
        steps = [r["step"] for r in _read_jsonl(self.path / "metrics.jsonl") if r.get("kind") == "train"]
        return sorted({s for s in steps if steps.count(s) > 1})

    def world_size(self) -> int | None:
        starts = [r for r in _read_jsonl(self.path / "metrics.jsonl") if r.get("event") == "start"]
        return int(starts[-1]["world_size"]) if starts else None

    def exit_status(self) -> dict | None:
        try:
            return json.loads((self.path / "exit.json").read_text())
        except (OSError, ValueError):
            return None

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def committed(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        return sorted((p for p in self.checkpoints.iterdir() if p.is_dir() and STEP_DIR.match(p.name)),
                      key=lambda p: p.name)

    def valid(self) -> list[Path]:
        """The committed checkpoints whose manifest verifies, oldest first."""
        return [p for p in self.committed() if verify(p) is None]

    def committing(self, from_step: int, world_size: int, since: float = 0.0) -> Path | None:
        """A save of step >= `from_step`, begun at or after `since`, whose files every rank has written and whose
        commit has not landed: a `step-N.tmp/` with trainer.json and one hash sidecar per rank (the sidecars go once
        the manifest is made). `since` leaves out a save that a killed attempt left uncommitted."""
        if not self.checkpoints.is_dir():
            return None
        for tmp in sorted(self.checkpoints.glob("step-*.tmp")):
            step = int(tmp.name[5:13])
            try:
                fresh = (tmp / "trainer.json").stat().st_mtime >= since
            except FileNotFoundError:
                continue
            if step >= from_step and fresh and len(list(tmp.glob(_HASH_SIDECARS))) >= world_size:
                return tmp
        return None


def step_of(checkpoint: Path) -> int:
    return int(STEP_DIR.match(checkpoint.name).group(1))


def corrupt(checkpoint: Path) -> Path:
    """Flips 16 bytes in the middle of the checkpoint's largest state file (its sha256 in the manifest no longer
    matches): what a torn write or a bad disk leaves. Returns the file."""
    victim = max((p for p in (checkpoint / "state").iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    victim.write_bytes(bytes(data))
    return victim


def _read_jsonl(path: Path) -> list[dict]:
    """Tolerant: a line cut by a kill is skipped (the trainer drops it too)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found
