"""The run folder's storage failing: a full disk, a read-only folder, an I/O error, said plainly.

Python and torch report these in their own words ("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs
598" for a full disk under torch.save); the run reports one message naming the folder, the bytes needed and the bytes
free, exits with EXIT_STORAGE on every rank, and leaves the earlier checkpoints as they were.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from yolotr.errors import StorageError

_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_FULL = {errno.ENOSPC, errno.EDQUOT}

__all__ = ["StorageError", "free_bytes", "free_text", "room_problem", "storage_error", "storage_problem"]


def storage_error(error: OSError, folder: Path) -> StorageError:
    """`error`, met writing into `folder`, in plain words (the folder, and the bytes free when it is full)."""
    if error.errno in _FULL:
        return StorageError(f"no space left on device: {folder} ({free_text(folder)}): free space, then run the same "
                            "command again to resume")
    if error.errno == errno.EROFS:
        return StorageError(f"{folder} is on a read-only file system ({error.filename or folder})")
    if error.errno in (errno.EACCES, errno.EPERM):
        return StorageError(f"cannot write {error.filename or folder}: permission denied")
    return StorageError(f"cannot write {error.filename or folder}: {error.strerror}")


def storage_problem(error: BaseException, folder: Path) -> str | None:
    """The plain message when `error` is the storage failing (an OSError of that kind, torch's writer failing for
    lack of room, or either reported as text by the writer process); None for any other failure."""
    if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS:
        return str(storage_error(error, folder))
    text = str(error)
    if "No space left on device" in text or "Disk quota exceeded" in text or (
            "unexpected pos" in text and free_bytes(folder) < 64 << 20):
        return (f"no space left on device: {folder} ({free_text(folder)}): free space, then run the same command "
                "again to resume")
    if "Read-only file system" in text:
        return f"{folder} is on a read-only file system"
    if "Permission denied" in text:
        return f"cannot write {folder}: permission denied"
    return None


def free_bytes(folder: Path) -> int:
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def free_text(folder: Path) -> str:
    return f"{_size(free_bytes(folder))} free"


def room_problem(folder: Path, needed: int) -> str | None:
    """Why `needed` bytes will not fit in `folder`, before a save starts (None: they fit, with a 10 % margin)."""
    free = free_bytes(folder)
    if free >= needed * 1.1:
        return None
    return (f"no space left on device for the next checkpoint: {folder} needs about {_size(needed)}, "
            f"{_size(free)} free: free space, then run the same command again to resume")


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
