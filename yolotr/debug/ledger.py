"""The sample ledger: with `debug.sample_ledger: true` every rank appends the samples it trained on to
`ledger.jsonl`, one json object per sample, so anyone can audit exactly-once delivery (see `read_ledger`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from yolotr.errors import StorageError


class LedgerWriter:
    """Appends `{"epoch", "step", "rank", "key"}` lines, one batch per `write`.

    Each batch goes out as one `write(2)` on an O_APPEND descriptor: ranks appending to the same file on a local
    filesystem interleave whole batches, never parts of a line.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, epoch: int, step: int, rank: int, keys: Iterable[str]) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path}: ledger is closed")
        data = "".join(json.dumps({"epoch": int(epoch), "step": int(step), "rank": int(rank), "key": key},
                                  separators=(",", ":")) + "\n" for key in keys).encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as error:  # a full or read-only disk: the exit-74 error naming this file
            raise StorageError.writing(self.path, error) or error from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def keep_steps_up_to(path: str | Path, step: int) -> None:
    """At a start from `step` (its checkpoint's, 0 without one): the ledger lists the samples whose update the run
    *kept*, so lines of later steps (trained by a crashed attempt, then lost with it) go, before any rank appends
    again. Rewritten atomically. A last line without its newline is the trace of a write the crash cut: not kept."""
    path = Path(path)
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if line.endswith("\n") and _step_of(line) <= step]
    partial = path.with_suffix(".partial")
    partial.write_text("".join(kept))
    partial.replace(path)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError):
        return 1 << 62  # a line cut by the crash: not kept


def read_ledger(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
