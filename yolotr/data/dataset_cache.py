"""Training and validating straight from a YOLO-format data.yaml or a COCO json (or COCO folder): the first use
converts it into shards in a cache, later uses reuse them, and a change to the source files rebuilds them.

    data=path/to/data.yaml           ultralytics layout: path, train/val as folders, txt lists or lists of those
    data=annotations/instances_val2017.json, data=path/to/coco (a folder with annotations/instances_*.json)

The conversion is `yolotr data shard`'s (same validation, same report.json of excluded samples), written to
`<cache>/<fingerprint>/`, where the cache is `.yolotr/<name>/` beside the dataset's yaml or json (`data_cache` to put
it elsewhere; ~/.cache/yolotr when the dataset's folder is read-only). The fingerprint covers the class names and the
name, size and mtime of every image, label and annotation file. Concurrent ranks (or jobs) take a lock on the cache:
one converts while the others wait, then all read the same shards.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from yolotr.data.convert_dataset import SourceDataset, read_source, write_dataset
from yolotr.data.errors import DataSpecError
from yolotr.data.index import INDEX_FILE
from yolotr.data.spec import read_yaml_mapping
from yolotr.log import EVERY_RANK, progress_bar_wanted

log = logging.getLogger(__name__)

CACHE_VERSION = 1
MANIFEST = "cache.json"
_SHARD_SUFFIXES = (".json", ".tar")


def resolve_data(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The shard data.yaml to load for `path`: `path` itself when it already describes shards; otherwise the cached
    conversion of the YOLO data.yaml or COCO json / folder it names, made (under a lock) when missing or stale."""
    path = Path(path)
    kind = source_kind(path)
    if kind == "shards":
        return path
    source = read_source(kind, path)
    fingerprint = fingerprint_of(source)
    root = cache_root(path, cache_dir)
    target = root / fingerprint[:16]
    with _locked(root / ".lock"):
        if _valid(target, fingerprint):
            return target / "data.yaml"
        # Said by whichever rank holds the lock: the others wait for it.
        log.info(f"data: converting {path} into shards in {target} (first use, or its files changed)",
                 extra=EVERY_RANK)
        for stale in root.iterdir():  # older conversions of this dataset: its files have changed since
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        report = write_dataset(source, target, progress=progress_bar_wanted())
        log.info(report.summary(), extra=EVERY_RANK)
        empty = [split for split, count in report.written.items() if count == 0]
        if empty:
            raise DataSpecError(f"{path}: no valid sample in split {', '.join(empty)} ({len(report.excluded)} "
                                f"excluded, each with its reason in {target / 'report.json'})")
        manifest = {"version": CACHE_VERSION, "fingerprint": fingerprint, "source": str(path.resolve()),
                    "built_by_pid": os.getpid(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "written": report.written, "excluded": len(report.excluded)}
        (target / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")  # written last: the commit marker
    return target / "data.yaml"


def source_kind(path: Path) -> str:
    """'shards' (a data.yaml of ours), 'yolo' (a YOLO data.yaml whose splits are image folders or lists) or 'coco'
    (an instances json, or a folder with annotations/); DataSpecError naming the path otherwise."""
    if path.is_dir():
        if (path / "annotations").is_dir():
            return "coco"
        raise DataSpecError(f"{path}: a folder is taken as a COCO dataset, but it has no annotations/ folder")
    if path.suffix == ".json":
        return "coco"
    doc = read_yaml_mapping(path, "data yaml", "path/train/val/names")
    root = Path(str(doc.get("path") or "."))
    root = root if root.is_absolute() else path.parent / root
    splits = [doc[s] for s in ("train", "val") if doc.get(s)]
    # One split that is ours makes the yaml ours: a missing or mistyped other split is then reported by its own
    # name, not as "no images" in the split that is fine.
    return "shards" if any(_describes_shards(root, s) for s in splits) else "yolo"


def _describes_shards(root: Path, value: object) -> bool:
    """A split entry of our data.yaml: an index.json, a folder holding one, or shard files (a list or a pattern)."""
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) and v.endswith(".tar") for v in value)
    if not isinstance(value, str):
        return False
    return value.endswith(_SHARD_SUFFIXES) or "{" in value or (root / value / INDEX_FILE).is_file()


def fingerprint_of(source: SourceDataset) -> str:
    """sha256 over the class names and the name, size and mtime of every file the conversion reads."""
    files = list(source.files)
    for candidates in source.splits.values():
        for candidate in candidates:
            files.append(candidate.image_path)
            if candidate.label_file is not None:
                files.append(candidate.label_file)
    for orphans in source.orphan_labels.values():
        files += orphans
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, source.names, source.category_ids]).encode())
    for file in files:
        try:
            stat = file.stat()
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{file}\0missing\n".encode())
    return digest.hexdigest()


def cache_root(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Where the conversions of the dataset `path` live: `.yolotr/<name>` beside it, or under `cache_dir`, or under
    ~/.cache/yolotr when the dataset's folder cannot be written."""
    name = path.stem if path.is_file() else path.name
    tag = f"{name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
    if cache_dir is not None:
        root = Path(cache_dir) / tag
    else:
        root = (path.parent if path.is_file() else path) / ".yolotr" / name
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "yolotr" / "datasets" / tag
            log.info(f"data: {path.parent} is not writable; caching its shards in {root}", extra=EVERY_RANK)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _valid(target: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("version") == CACHE_VERSION and manifest.get("fingerprint") == fingerprint


@contextmanager
def _locked(lock_file: Path):
    """An exclusive lock held while the cache is checked and, if need be, written (flock: released by the kernel
    if the holder dies, so a killed conversion never blocks the next run)."""
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
