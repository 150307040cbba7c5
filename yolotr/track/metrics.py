"""`metrics.jsonl`: one JSON object per line, the run's record that needs nothing but Python to read.

Every line carries `kind` (`train`, `val` or `event`) and a wall-clock `time`. Lines are flushed as they
are written so that a crash loses at most the line being written; that half-written last line is what
`read_metrics` tolerates and what `MetricsWriter` trims away when a resumed run reopens the file.

Non-finite floats (a NaN loss, an infinite grad norm) are written as Python's json writes them (`NaN`,
`Infinity`): they are exactly the events this file must not hide, and `json.loads` reads them back.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from yolotr.errors import StorageError


class MetricsWriter:
    """Appends records to a `metrics.jsonl` file; rank 0 owns it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _trim_partial_last_line(self.path)
        # Unbuffered: each record reaches the OS in one write(2) as it is written, and a write that fails leaves
        # nothing behind in a buffer to be flushed later.
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one record `{"kind": kind, "time": now, **fields}` and return it."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"{self.path}: record kind must be a non-empty string, got {kind!r}")
        if "kind" in fields or "time" in fields:
            raise ValueError(f"{self.path}: 'kind' and 'time' are set by MetricsWriter, not by the caller")
        record = {"kind": kind, "time": time.time(), **fields}
        try:
            line = json.dumps(record, default=_json_default)
        except TypeError as error:
            raise TypeError(f"{self.path}: cannot write {kind} record {fields!r}: {error}") from error
        if self._fd is None:
            raise ValueError(f"{self.path}: the metrics file is closed")
        data = memoryview((line + "\n").encode("utf-8"))
        size = os.fstat(self._fd).st_size
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as error:  # a full or read-only disk: the exit-74 error naming this file
            try:
                os.ftruncate(self._fd, size)  # no half record left: every reader sees whole lines
            except OSError:
                pass
            raise StorageError.writing(self.path, error) or error from None
        return record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a `metrics.jsonl`, in file order.

    A last line that does not parse is the trace of a crash mid-write and is dropped with a warning;
    an unparsable line anywhere else means the file was damaged and raises.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                warnings.warn(f"{path}: ignoring truncated last line {number}", stacklevel=2)
                break
            raise ValueError(f"{path}:{number}: not a JSON record ({error})") from error
        if not isinstance(record, dict) or "kind" not in record:
            raise ValueError(f"{path}:{number}: a record must be a JSON object with a 'kind'")
        records.append(record)
    return records


def supersede_records_after(path: str | os.PathLike, step: int) -> int:
    """On resume from `step`: the records a crashed or preempted attempt wrote after that step describe training the
    run has thrown away, and are repeated by the resumed run. They move to `metrics.superseded.jsonl` beside (kept,
    never deleted) and metrics.jsonl is rewritten without them, atomically, so every reader (the summary, the plots,
    the W&B upload) sees each step once. Returns how many moved."""
    path = Path(path)
    if not path.exists():
        return 0
    _trim_partial_last_line(path)
    kept, superseded = [], []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            later = int(json.loads(line).get("step", -1)) > step
        except (ValueError, TypeError, AttributeError):
            later = False
        (superseded if later else kept).append(line)
    if superseded:
        with open(path.with_name("metrics.superseded.jsonl"), "a", encoding="utf-8") as aside:
            aside.writelines(superseded)
            aside.flush()
            os.fsync(aside.fileno())
        partial = path.with_name(path.name + ".partial")
        partial.write_text("".join(kept), encoding="utf-8")
        os.replace(partial, path)
    return len(superseded)


def _trim_partial_last_line(path: Path) -> None:
    """Cut a half-written last line so that appended records start on a line of their own."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        data = file.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1  # 0 when the whole file is one partial line
        warnings.warn(f"{path}: dropping a partial last line left by an interrupted run", stacklevel=3)
        file.truncate(keep)


def _json_default(value: Any) -> Any:
    # Tensors and numpy scalars reach the writer from training code; store their Python value.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
