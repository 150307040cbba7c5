"""Writes validated samples into WebDataset tar shards plus the split's index, byte-identically for the same input.

`webdataset.ShardWriter` does the tar writing and the roll-over to the next shard; we pin what would otherwise vary
between runs (member mtime, owner) and index each finished shard by reading it back, which also proves it readable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from yolotr.data.index import INDEX_FILE, SplitIndex, scan_shard, write_index
from yolotr.data.labels import DetectionLabel, encode_label

SHARD_PATTERN = "shard-%06d.tar"
IMAGE_EXTENSIONS = ("jpg", "png")
# ustar stores names up to 100 characters (plus a 155-character prefix we do not rely on); the member
# name is `<key>.<ext>`.
_MAX_KEY_LENGTH = 90

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleRecord:
    """A validated sample, ready to be written."""

    key: str
    image: bytes  # the original encoded bytes
    image_ext: str  # "jpg" or "png"
    label: DetectionLabel


def safe_key(text: str) -> str:
    """A webdataset-safe key from a path-like text: no dots (they split key from extension), no slashes."""
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "sample"
    # Keep the end (file names differ at the end) and leave room for a `_N` de-duplication suffix.
    return key[-(_MAX_KEY_LENGTH - 8):]


def unique_keys(texts: Iterable[str]) -> list[str]:
    """`safe_key` of each text, with `_2`, `_3`... appended where two texts give the same key."""
    seen: dict[str, int] = {}
    keys = []
    for text in texts:
        key = safe_key(text)
        count = seen.get(key, 0) + 1
        seen[key] = count
        keys.append(key if count == 1 else f"{key}_{count}")
    return keys


def write_shards(samples: Iterable[SampleRecord], out_dir: str | Path, *, nc: int, names: list[str],
                 samples_per_shard: int = 1000, shard_bytes: int | None = None) -> SplitIndex:
    """Writes the samples in the given order to `out_dir/shard-NNNNNN.tar` and `out_dir/index.json`.

    A new shard starts after `samples_per_shard` samples or once a shard holds `shard_bytes` bytes of payload.
    Old shards in `out_dir` are removed first so that the index and the folder always agree.
    """
    import webdataset as wds  # here, not at the top: it imports torch, which `yolotr data synth --help` need not

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("shard-*.tar"):
        stale.unlink()
    finished: list[str] = []
    writer = wds.ShardWriter(
        str(out_dir / SHARD_PATTERN),
        maxcount=samples_per_shard,
        maxsize=float(shard_bytes) if shard_bytes else 3e12,
        post=finished.append,
        verbose=0,
        # Fixed metadata: the same samples must give the same bytes. An integer mtime keeps plain ustar headers
        # (a float one makes tarfile add a pax header to every member).
        mtime=0,
        user="yolotr",
        group="yolotr",
        mode=0o444,
        encoder=False,
    )
    written = 0
    try:
        for sample in samples:
            if sample.image_ext not in IMAGE_EXTENSIONS:
                raise ValueError(f"{sample.key}: image extension {sample.image_ext!r} not in {IMAGE_EXTENSIONS}")
            if len(sample.key) > _MAX_KEY_LENGTH or "." in sample.key:
                raise ValueError(f"{sample.key!r}: keys must be at most {_MAX_KEY_LENGTH} characters without dots")
            writer.write({"__key__": sample.key, sample.image_ext: sample.image, "json": encode_label(sample.label)})
            written += 1
    finally:
        writer.close()
    if written == 0:
        # ShardWriter opens its first shard eagerly; an empty split has no shards.
        for name in finished:
            Path(name).unlink(missing_ok=True)
        finished.clear()
    index = SplitIndex(directory=out_dir, shards=[scan_shard(Path(name)) for name in finished], nc=nc,
                       names=list(names), index_file=str(out_dir / INDEX_FILE))
    write_index(index, out_dir / INDEX_FILE)
    for shard in index.shards:
        log.debug(f"shards: wrote {out_dir / shard.file}: {shard.samples} samples, {shard.bytes} bytes, "
                  f"sha256 {shard.sha256[:12]}")
    return index
