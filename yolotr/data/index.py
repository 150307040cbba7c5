"""The shard index: what every reader needs to seek straight to a sample.

One `index.json` per split, beside its shards:

    {"version": 1, "nc": K, "names": [...], "num_samples": N,
     "shards": [{"file": "shard-000000.tar", "sha256": ..., "bytes": ..., "samples": n,
                 "keys": [...], "offsets": [...], "sizes": [...]}, ...]}

`offsets[i]` is the byte offset of the first tar header of sample i, `sizes[i]` the bytes from there to the end of
its last member's data padding, so one `seek` + one `read` fetches a whole sample. Global sample ids enumerate the
samples shard by shard in file order, so sorting ids sorts reads by (shard, offset).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from yolotr.data.errors import DataSpecError

if TYPE_CHECKING:
    from yolotr.data.remote.cache import RemoteShards

INDEX_VERSION = 1
INDEX_FILE = "index.json"


@dataclass(frozen=True)
class ShardEntry:
    file: str  # relative to the split's directory
    sha256: str
    bytes: int
    keys: list[str]
    offsets: list[int]
    sizes: list[int]

    @property
    def samples(self) -> int:
        return len(self.keys)

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes, "samples": self.samples,
                "keys": self.keys, "offsets": self.offsets, "sizes": self.sizes}


@dataclass(frozen=True)
class SplitIndex:
    """The shards of one split (train or val) and where each sample lies in them."""

    directory: Path  # shard files are relative to it (a local split)
    shards: list[ShardEntry]
    nc: int
    names: list[str] = field(default_factory=list)
    index_file: str = ""  # where it was loaded from, for error messages
    remote: RemoteShards | None = None  # shards behind a URL, read through the node-local cache

    @property
    def num_samples(self) -> int:
        return int(self.shard_starts[-1])

    def shard_path(self, shard: int) -> Path:
        """The local file of shard `shard`; for a remote split, its cached copy (downloaded first if need be)."""
        if self.remote is not None:
            from yolotr.data.remote.cache import cache_for

            return cache_for(self.remote.options).local_copy(self.shard_location(shard), self.shards[shard])
        return self.directory / self.shards[shard].file

    def shard_is_local(self, shard: int) -> bool:
        """Whether reading shard `shard` costs no download: a local split, or a remote shard this node has cached."""
        if self.remote is None:
            return True
        from yolotr.data.remote.cache import cache_for

        return cache_for(self.remote.options).holds(self.shards[shard])

    def shard_location(self, shard: int) -> str:
        """Where shard `shard` lives, for messages: its path, or its URL."""
        if self.remote is not None:
            return self.remote.url(self.shards[shard])
        return str(self.directory / self.shards[shard].file)

    @cached_property
    def shard_starts(self) -> np.ndarray:
        """(S+1,) int64: global id of each shard's first sample; the last entry is the sample count."""
        return np.concatenate([[0], np.cumsum([s.samples for s in self.shards], dtype=np.int64)]).astype(np.int64)

    @cached_property
    def keys(self) -> list[str]:
        """Key of every sample, by global id."""
        return [key for shard in self.shards for key in shard.keys]

    @cached_property
    def shard_of(self) -> np.ndarray:
        """(N,) int64: shard number of every sample, by global id."""
        return np.repeat(np.arange(len(self.shards), dtype=np.int64), [s.samples for s in self.shards])

    @cached_property
    def offsets(self) -> np.ndarray:
        return np.asarray([o for s in self.shards for o in s.offsets], dtype=np.int64)

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.asarray([n for s in self.shards for n in s.sizes], dtype=np.int64)

    @cached_property
    def fingerprint(self) -> str:
        """Identifies the dataset (files, keys, contents) for stream states: another dataset, another fingerprint."""
        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(json.dumps([shard.file, shard.sha256, shard.keys], separators=(",", ":")).encode())
        return digest.hexdigest()[:16]

    def to_json(self) -> dict:
        return {"version": INDEX_VERSION, "nc": self.nc, "names": self.names, "num_samples": self.num_samples,
                "shards": [s.to_json() for s in self.shards]}


def write_index(index: SplitIndex, path: Path) -> None:
    """Writes the index deterministically (same index, same bytes)."""
    Path(path).write_text(json.dumps(index.to_json(), indent=1, sort_keys=True) + "\n")


def load_index(path: str | Path) -> SplitIndex:
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataSpecError(f"{path}: index file not found (write shards with `yolotr data shard`/`synth`)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DataSpecError(f"{path}: cannot read the index: {err}") from None
    return index_from_json(doc, path.parent, where=str(path))


def index_from_json(doc: object, directory: Path, *, where: str,
                    remote: RemoteShards | None = None) -> SplitIndex:
    """The SplitIndex of a parsed index.json (read from `where`, a path or a URL); errors name `where` and the key."""
    path = where  # what the messages name
    if not isinstance(doc, dict) or doc.get("version") != INDEX_VERSION:
        found = doc.get("version") if isinstance(doc, dict) else doc
        raise DataSpecError(f"{path}: key 'version': expected {INDEX_VERSION}, got {found!r}")
    shards = []
    for i, raw in enumerate(doc.get("shards", [])):
        try:
            entry = ShardEntry(file=str(raw["file"]), sha256=str(raw["sha256"]), bytes=int(raw["bytes"]),
                               keys=[str(k) for k in raw["keys"]], offsets=[int(o) for o in raw["offsets"]],
                               sizes=[int(n) for n in raw["sizes"]])
        except (KeyError, TypeError, ValueError) as err:
            raise DataSpecError(f"{path}: key 'shards[{i}]': malformed entry ({err!r})") from None
        if not len(entry.keys) == len(entry.offsets) == len(entry.sizes) == int(raw.get("samples", len(entry.keys))):
            raise DataSpecError(f"{path}: key 'shards[{i}]': keys/offsets/sizes/samples lengths differ")
        shards.append(entry)
    if not isinstance(doc.get("nc"), int) or doc["nc"] <= 0:
        raise DataSpecError(f"{path}: key 'nc': expected a positive integer, got {doc.get('nc')!r}")
    return SplitIndex(directory=directory, shards=shards, nc=doc["nc"], names=list(doc.get("names", [])),
                      index_file=str(path), remote=remote)


def scan_shard(path: Path, *, file: str | None = None) -> ShardEntry:
    """Builds the index entry of one tar shard by reading it (used by the writer, and for shards without an index).

    Members are grouped into samples by key as webdataset does: consecutive members sharing the name up to the
    first dot of the base name.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    keys: list[str] = []
    offsets: list[int] = []
    ends: list[int] = []
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key = sample_key_of(member.name)
            end = member.offset_data + _padded(member.size)
            if keys and keys[-1] == key:
                ends[-1] = end
            else:
                keys.append(key)
                offsets.append(member.offset)
                ends.append(end)
    return ShardEntry(file=file or path.name, sha256=digest.hexdigest(), bytes=path.stat().st_size, keys=keys,
                      offsets=offsets, sizes=[e - o for o, e in zip(offsets, ends)])


def sample_key_of(member_name: str) -> str:
    """webdataset's rule: the key is the member name up to the first dot of its base name."""
    directory, _, base = member_name.rpartition("/")
    stem = base.split(".", 1)[0]
    return f"{directory}/{stem}" if directory else stem


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
