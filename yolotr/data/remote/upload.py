"""`yolotr data shard ... --out s3://bucket/prefix`: the dataset is written and verified in a local temporary folder,
then uploaded: every split's shards first, then its index.json, then data.yaml and report.json. A reader that finds
an index therefore finds every shard it names; an upload cut short leaves no index pointing at missing shards."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from yolotr.data.errors import DataSpecError
from yolotr.data.index import INDEX_FILE, load_index
from yolotr.data.remote.fetch import with_retries
from yolotr.data.remote.location import RemoteOptions, filesystem, join
from yolotr.log import EVERY_RANK

log = logging.getLogger(__name__)


def upload_dataset(local: Path, url: str, options: RemoteOptions | None = None) -> list[str]:
    """Uploads the dataset folder `local` (data.yaml, <split>/index.json and shards) to the folder URL `url`;
    returns the URLs written, in the order written. Each shard is checked against its index before it leaves."""
    options = options or RemoteOptions()
    fs = filesystem(url, options)
    indexes = sorted(local.glob(f"*/{INDEX_FILE}"))
    if not indexes:
        raise DataSpecError(f"{local}: no <split>/{INDEX_FILE} to upload")
    written = []

    def put(path: Path) -> None:
        target = join(url, path.relative_to(local).as_posix())
        with_retries(lambda: fs.put_file(str(path), target), target, options, what="upload")
        written.append(target)

    for index_file in indexes:
        index = load_index(index_file)
        for entry in index.shards:
            shard = index_file.parent / entry.file
            _verify(shard, entry.bytes, entry.sha256)
            put(shard)
        put(index_file)  # after its shards
    for name in ("report.json", "data.yaml"):  # data.yaml last: it names the indexes
        if (local / name).is_file():
            put(local / name)
    log.info(f"data: uploaded {len(written)} files to {url}", extra=EVERY_RANK)
    return written


def _verify(path: Path, size: int, sha256: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if path.stat().st_size != size or digest.hexdigest() != sha256:
        raise DataSpecError(f"{path}: differs from its index after writing (size or sha256); nothing was uploaded "
                            f"past it")
