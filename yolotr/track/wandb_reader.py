"""Read a run's history back from its `.wandb` file, without the W&B server or the wandb service.

wandb ≥0.18 writes `.wandb` files from its Go core, and the Python reader it used to ship
(`wandb.sdk.internal.datastore`) is gone from current releases (0.31 has none), so the few lines of
format parsing are written here. The format is LevelDB's log format behind a 7-byte file header:

    file   := header block*            header := ident ":W&B" (4) | magic 0xBEE1 (uint16 LE) | version (uint8)
    block  := chunk* trailer?          32 KiB, counted from the start of the file (header included)
    chunk  := crc32 (uint32 LE) | length (uint16 LE) | type (uint8) | data[length]
    type   := FULL 1 | FIRST 2 | MIDDLE 3 | LAST 4      (a record split across blocks is FIRST MIDDLE* LAST)
    crc32  := zlib.crc32(data, zlib.crc32(bytes([type])))

A block whose remaining space cannot hold a chunk header ends in zero padding. Each reassembled record
is a serialised `wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wandb.proto import wandb_internal_pb2

FILE_HEADER = struct.Struct("<4sHB")
FILE_IDENT, FILE_MAGIC = b":W&B", 0xBEE1
CHUNK_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(wandb_file: str | os.PathLike) -> Iterator[wandb_internal_pb2.Record]:
    """Every record of a `.wandb` file, in write order.

    A chunk cut short at the end of the file is what a run that is still writing (or crashed) leaves
    behind; it ends the iteration quietly. A checksum mismatch before the end raises.
    """
    path = Path(wandb_file)
    data = path.read_bytes()
    if len(data) < FILE_HEADER.size:
        raise ValueError(f"{path}: too short to be a .wandb file ({len(data)} bytes)")
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise ValueError(f"{path}: not a .wandb file (header {data[:FILE_HEADER.size]!r})")

    position = FILE_HEADER.size
    pending: list[bytes] | None = None  # parts of a record split over blocks
    while position + CHUNK_HEADER.size <= len(data):
        space_left = BLOCK_SIZE - position % BLOCK_SIZE
        if space_left < CHUNK_HEADER.size:
            position += space_left  # zero trailer of the block
            continue
        crc, length, chunk_type = CHUNK_HEADER.unpack_from(data, position)
        start = position + CHUNK_HEADER.size
        if chunk_type == 0 and length == 0:
            position += space_left  # unwritten (zeroed) space: nothing more in this block
            continue
        if start + length > len(data):
            return  # truncated tail
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(bytes([chunk_type]))) != crc:
            raise ValueError(f"{path}: checksum mismatch in the chunk at byte {position}")
        position = start + length

        if chunk_type == FULL:
            yield _parse(path, payload, position)
        elif chunk_type == FIRST:
            pending = [payload]
        elif chunk_type in (MIDDLE, LAST) and pending is not None:
            pending.append(payload)
            if chunk_type == LAST:
                yield _parse(path, b"".join(pending), position)
                pending = None
        else:
            raise ValueError(f"{path}: unexpected chunk type {chunk_type} at byte {position}")


def read_history(wandb_file: str | os.PathLike) -> tuple[str | None, list[dict[str, Any]]]:
    """(run id, history rows) of a `.wandb` file; each row maps logged keys to values and has `_step`."""
    run_id, rows, _ = _read_file(wandb_file)
    return run_id, rows


def read_run_history(run_dir: str | os.PathLike) -> tuple[str | None, list[dict[str, Any]]]:
    """(run id, history rows) of a run over every start that logged to it, one row per step: the steps
    metrics.jsonl holds, and what a W&B server that rewinds runs shows once the files are synced. Offline, each process writes a `.wandb` file of its
    own; a start that resumed from a checkpoint at step S rewound the run to S (its run record's branch point; in
    files from before yolotr rewound, its `event/resume` row), so the rows an earlier start logged after S, training
    the run threw away, are left out. The rows one step gets from the starts that logged it are merged into one."""
    run_id: str | None = None
    steps: dict[int, dict[str, Any]] = {}
    for wandb_file in find_wandb_files(run_dir):
        file_id, rows, rewound_to = _read_file(wandb_file)
        run_id = file_id or run_id
        if rewound_to is None:
            rewound_to = next((row["_step"] for row in rows if "event/resume" in row and "_step" in row), None)
        if rewound_to is not None:
            for step in [step for step in steps if step > rewound_to]:
                del steps[step]
        for row in rows:
            if "_step" in row:
                steps.setdefault(row["_step"], {}).update(row)
    return run_id, [steps[step] for step in sorted(steps)]


def _read_file(wandb_file: str | os.PathLike) -> tuple[str | None, list[dict[str, Any]], int | None]:
    """(run id, history rows, the `_step` the run was rewound to when it started, or None)."""
    run_id: str | None = None
    rewound_to: int | None = None
    rows: list[dict[str, Any]] = []
    for record in iter_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id or run_id
            if record.run.HasField("branch_point") and record.run.branch_point.metric == "_step":
                rewound_to = int(record.run.branch_point.value)
        elif kind == "history":
            row = {_item_key(item): json.loads(item.value_json) for item in record.history.item}
            if record.history.HasField("step"):
                row["_step"] = record.history.step.num
            rows.append(row)
    return run_id, rows, rewound_to


def wait_until_complete(wandb_file: str | os.PathLike, timeout_s: float, poll_s: float = 0.05) -> bool:
    """Wait until a `.wandb` file ends with its run's `exit` record; False if that takes over `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in iter_records(wandb_file)):
                return True
        except (OSError, ValueError):
            pass  # not created yet, or caught mid-write
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)


def find_wandb_files(run_dir: str | os.PathLike) -> list[Path]:
    """`.wandb` files under `run_dir/wandb/`, oldest first (offline runs make one folder per process)."""
    files = Path(run_dir, "wandb").glob("*run-*/*.wandb")
    # Folder names are `[offline-]run-YYYYMMDD_HHMMSS-<id>`: order by that timestamp.
    return sorted(files, key=lambda f: (_folder_timestamp(f.parent.name), f.parent.name))


def _folder_timestamp(name: str) -> str:
    match = re.search(r"run-(\d{8}_\d{6})-", name)
    return match.group(1) if match else ""


def _item_key(item: Any) -> str:
    # Newer writers fill `nested_key` (one entry per level of a logged dict), older ones `key`.
    return item.key or ".".join(item.nested_key)


def _parse(path: Path, payload: bytes, position: int) -> wandb_internal_pb2.Record:
    # Imported here: `import wandb` takes seconds, and the logger imports this module even when W&B is off.
    from wandb.proto import wandb_internal_pb2

    record = wandb_internal_pb2.Record()
    try:
        record.ParseFromString(payload)
    except Exception as error:  # protobuf raises its own DecodeError type
        raise ValueError(f"{path}: undecodable record ending at byte {position}: {error}") from error
    return record
