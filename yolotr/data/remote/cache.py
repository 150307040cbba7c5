"""The node-local shard cache: whole shard files downloaded once per node, verified, evicted least recently used.

A cached shard is `<cache_dir>/<sha256[:16]>-<file name>`: named by content, so two datasets or two versions of one
never mix, and a file under that name is the one the index describes (downloads land as `.part`, are checked against
the index's size and sha256, then renamed). Ranks and DataLoader workers of one node share the folder: an exclusive
flock on `<name>.lock` lets one of them download while the others wait and then read the same file. Samples (mosaic
partners too) are read from the local file, never one request per sample.

The size limit (remote.cache_limit_gb) is kept by deleting the least recently used shards (a read touches its file)
before a download, sparing the ones the caller says the order needs soon; a shard deleted while another process
reads it stays readable to that process (POSIX keeps an open file).
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from yolotr.data.errors import RemoteDataError
from yolotr.data.remote.fetch import download
from yolotr.data.remote.location import RemoteOptions, join
from yolotr.log import EVERY_RANK

if TYPE_CHECKING:
    from yolotr.data.index import ShardEntry

log = logging.getLogger(__name__)


def cache_name(entry: ShardEntry) -> str:
    return f"{entry.sha256[:16]}-{entry.file.replace('/', '_')}"


@dataclass(frozen=True)
class RemoteShards:
    """Where a split's shards live (`base_url`, the folder of its index.json) and how they are cached."""

    base_url: str
    options: RemoteOptions = field(default_factory=RemoteOptions)

    def url(self, entry: ShardEntry) -> str:
        return join(self.base_url, entry.file)


class ShardCache:
    """One process's handle on the node's cache folder (every process makes its own; the files are shared)."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.root = Path(options.cache_dir).expanduser()
        self.limit_bytes = int(options.cache_limit_gb * 1e9)
        self.bytes_downloaded = 0  # by this process
        self.soon: set[str] = set()  # cache names the order needs soon (set by the prefetcher): never evicted

    def local_copy(self, url: str, entry: ShardEntry) -> Path:
        """The verified local file of the shard `entry` at `url`, downloaded first unless this node has it."""
        final = self.root / cache_name(entry)
        if _whole(final, entry.bytes):
            os.utime(final)  # recently used: the last to be evicted
            return final
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = open(self.root / f"{final.name}.lock", "a")
        except OSError as error:
            raise RemoteDataError(f"{url}: cannot use the shard cache {self.root} ({error.strerror or error}); set "
                                  f"remote.cache_dir to a writable node-local folder") from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another rank of this node may be downloading it: wait for it
            if not _whole(final, entry.bytes):
                self.make_room(entry.bytes, keep={final.name})
                self.bytes_downloaded += download(url, final, size=entry.bytes, sha256=entry.sha256,
                                                  options=self.options)
            # The lock file stays: deleting it would let a waiter lock a file no one else sees.
        return final

    def holds(self, entry: ShardEntry) -> bool:
        return _whole(self.root / cache_name(entry), entry.bytes)

    def make_room(self, incoming: int, keep: Iterable[str] = ()) -> None:
        """Deletes least recently used shards until `incoming` more bytes fit under the limit."""
        if self.limit_bytes <= 0:
            return
        spared = set(keep) | self.soon
        files = []
        for path in self.root.glob("*.tar"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted by another process just now
                continue
            files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total + incoming <= self.limit_bytes:
                return
            if path.name in spared:
                continue
            path.unlink(missing_ok=True)
            total -= size
        if total + incoming > self.limit_bytes:
            log.warning(f"data: the shard cache {self.root} holds {total / 1e9:.2f} GB the order needs soon; "
                        f"remote.cache_limit_gb={self.options.cache_limit_gb:g} is exceeded to fit the next shard",
                        extra=EVERY_RANK)


def _whole(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


_CACHES: dict[RemoteOptions, ShardCache] = {}


def cache_for(options: RemoteOptions) -> ShardCache:
    """This process's cache for `options` (one per process: its byte count and its `soon` set are the process's)."""
    if options not in _CACHES:
        _CACHES[options] = ShardCache(options)
    return _CACHES[options]
