"""Random access into tar shards through the index: one forward `seek` + one `read` per sample.

webdataset reads a tar from its start; resuming mid-epoch with it means replaying everything before the position.
The index gives each sample's byte offset and size, so a reader seeks straight to it. Callers read the samples of a
batch sorted by global id (= shard, then offset), so within a shard the reads move forward only, which is what
cluster filesystems and object stores are good at.
"""

from __future__ import annotations

import tarfile
from collections import OrderedDict
from typing import BinaryIO

from yolotr.data.errors import RemoteDataError, SampleError
from yolotr.data.index import SplitIndex, sample_key_of

_BLOCK = tarfile.BLOCKSIZE  # 512
_REGULAR_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


class ShardReader:
    """Reads samples of one split; keeps a few shard files open. Not shared between processes."""

    def __init__(self, split: SplitIndex, *, max_open_files: int = 8) -> None:
        self.split = split
        self.max_open_files = max_open_files
        self.bytes_read = 0
        self.unreadable_shards: set[str] = set()
        self._open: OrderedDict[int, BinaryIO] = OrderedDict()

    def read(self, global_id: int) -> dict[str, memoryview]:
        """The members of sample `global_id` as {extension: bytes}; raises `SampleError` (key filled in)."""
        key = self.split.keys[global_id]
        try:
            shard = int(self.split.shard_of[global_id])
            offset = int(self.split.offsets[global_id])
            size = int(self.split.sizes[global_id])
            buffer = self._read_at(self._handle(shard), shard, offset, size)
            return _parse_members(memoryview(buffer), key)
        except SampleError as err:
            err.key = key
            raise

    def read_member(self, global_id: int, extension: str) -> memoryview:
        """One member of sample `global_id` (e.g. its "json" label) without reading the others: walks the sample's
        tar headers, seeking past member data (two small reads for a label stored after its image). Raises
        `SampleError` (key filled in)."""
        key = self.split.keys[global_id]
        shard = int(self.split.shard_of[global_id])
        position = int(self.split.offsets[global_id])
        end = position + int(self.split.sizes[global_id])
        pax: dict[str, str] = {}
        try:
            handle = self._handle(shard)
            while position + _BLOCK <= end:
                header = bytes(self._read_at(handle, shard, position, _BLOCK))
                try:
                    info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
                except tarfile.HeaderError as err:
                    raise SampleError("bad_tar_header", f"at sample byte {position}: {err}") from None
                start = position + _BLOCK
                position = start + (info.size + _BLOCK - 1) // _BLOCK * _BLOCK
                if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
                    if info.type == tarfile.XHDTYPE:
                        pax = _pax_records(bytes(self._read_at(handle, shard, start, info.size)))
                    continue
                name, size, pax = pax.get("path", info.name), int(pax.get("size", info.size)), {}
                if sample_key_of(name) != key:
                    raise SampleError("key_mismatch", f"member {name!r} at the offset indexed for key {key!r}")
                if name.rpartition("/")[2].partition(".")[2] == extension:
                    return memoryview(self._read_at(handle, shard, start, size))
        except SampleError as err:
            err.key = key
            raise
        reason = "missing_label" if extension == "json" else "missing_image"
        raise SampleError(reason, f"no .{extension} member", key=key)

    def _read_at(self, handle: BinaryIO, shard: int, offset: int, size: int) -> bytearray:
        buffer = bytearray(size)
        try:
            handle.seek(offset)
            got = handle.readinto(buffer)  # type: ignore[attr-defined]  # a file or an fsspec file: both have it
        except OSError as err:
            raise SampleError("unreadable_shard", f"{self.split.shard_location(shard)}: {err}") from None
        self.bytes_read += got
        if got < size:
            raise SampleError("truncated_shard", f"{self.split.shard_location(shard)} ends at byte {offset + got}, "
                                                 f"the sample needs {offset + size}")
        return buffer

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()

    def _handle(self, shard: int) -> BinaryIO:
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        name = self.split.shards[shard].file.rpartition("/")[2]
        if name in self.unreadable_shards:
            raise SampleError("unreadable_shard", f"{self.split.shard_location(shard)} (failed before)")
        try:
            # A remote shard: its verified copy in the node-local cache (a download first, retried within the
            # budget; DataUnavailable when that runs out stops the run, it is no sample's fault).
            path = self.split.shard_path(shard)
            # Unbuffered: we read whole samples, Python's buffer would only add a copy.
            handle = open(path, "rb", buffering=0)
        except RemoteDataError as err:  # 404, 403, not the file indexed: like a local shard that is gone
            self.unreadable_shards.add(name)
            raise SampleError("unreadable_shard", str(err)) from None
        except OSError as err:
            self.unreadable_shards.add(name)
            raise SampleError("unreadable_shard", f"{self.split.shard_location(shard)}: {err.strerror or err}") from None
        self._open[shard] = handle
        if len(self._open) > self.max_open_files:
            self._open.popitem(last=False)[1].close()
        return handle


def _parse_members(buffer: memoryview, key: str) -> dict[str, memoryview]:
    """Splits a sample's bytes (consecutive ustar members) into {extension: data} without copying the data."""
    members: dict[str, memoryview] = {}
    position = 0
    pax: dict[str, str] = {}  # overrides from a pax extended header, for the member that follows it
    while position + _BLOCK <= len(buffer):
        header = bytes(buffer[position:position + _BLOCK])
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as err:
            raise SampleError("bad_tar_header", f"at sample byte {position}: {err}") from None
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            # Shards written by other tools may carry pax headers (long names, float mtimes).
            start = position + _BLOCK
            records = bytes(buffer[start:start + info.size])
            if info.type == tarfile.XHDTYPE:
                pax = _pax_records(records)
            position = start + (info.size + _BLOCK - 1) // _BLOCK * _BLOCK
            continue
        if "path" in pax:
            info.name = pax["path"]
        if "size" in pax:
            info.size = int(pax["size"])
        pax = {}
        if info.type not in _REGULAR_FILE_TYPES:
            raise SampleError("bad_tar_header", f"member {info.name!r} has unsupported tar type {info.type!r}")
        if sample_key_of(info.name) != key:
            raise SampleError("key_mismatch", f"member {info.name!r} at the offset indexed for key {key!r}")
        start = position + _BLOCK
        end = start + info.size
        if end > len(buffer):
            raise SampleError("bad_tar_header", f"member {info.name!r} runs past the indexed sample size")
        extension = info.name.rpartition("/")[2].split(".", 1)[1] if "." in info.name else ""
        members[extension] = buffer[start:end]
        position = start + (info.size + _BLOCK - 1) // _BLOCK * _BLOCK
    return members


def _pax_records(data: bytes) -> dict[str, str]:
    """Records of a pax extended header: "<length> <key>=<value>\\n" repeated."""
    records = {}
    position = 0
    try:
        while position < len(data) and data[position:position + 1] != b"\0":
            length = int(data[position:data.index(b" ", position)])
            key, _, value = data[data.index(b" ", position) + 1:position + length - 1].partition(b"=")
            records[key.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
            position += length
    except ValueError as err:
        raise SampleError("bad_tar_header", f"malformed pax header: {err}") from None
    return records
