"""Training and validating straight from a YOLO-format data.yaml or a COCO json (or COCO folder): the first use
converts it into shards in a cache, later uses reuse them, and a change to the source files rebuilds them.

    data=path/to/data.yaml           ultralytics layout: path, train/val as folders, txt lists or lists of those
    data=annotations/instances_val2017.json, data=path/to/coco (a folder with annotations/instances_*.json)

The conversion is `yolotr data shard`'s (same validation, same report.json of excluded samples), written to
`<cache>/<fingerprint>/`, where the cache is `.yolotr/<name>/` beside the dataset's yaml or json (`data_cache` to put
it elsewhere; ~/.cache/yolotr when the dataset's folder is read-only). The fingerprint covers the class names, the
contents of every label and annotation file, and the name, size and mtime of every image. Concurrent ranks (or jobs)
take a lock on the cache: one converts while the others wait, then all read the same shards. A new conversion
deletes the earlier ones, except those a run folder records as its own (conversion_use.py): a running or resumable
run never loses its shards. A disk full or read-only while converting is EXIT_STORAGE, with the half-written
conversion removed.
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

from yolotr.data.conversion_use import RecordedConversion, record_use, recorded_conversion, runs_using
from yolotr.data.convert_dataset import SourceDataset, read_source, write_dataset
from yolotr.data.errors import ConversionStorageError, DataSpecError
from yolotr.data.index import INDEX_FILE
from yolotr.data.remote.location import check_supported, is_url
from yolotr.data.spec import read_yaml_mapping
from yolotr.log import EVERY_RANK, progress_bar_wanted

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: label files hashed by content
MANIFEST = "cache.json"
_SHARD_SUFFIXES = (".json", ".tar")


def resolve_data(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 run_dir: str | os.PathLike | None = None, *, record: bool = True) -> Path | str:
    """The shard data.yaml to load for `path`: `path` itself when it already describes shards; otherwise the cached
    conversion of the YOLO data.yaml or COCO json / folder it names, made (under a lock) when missing or stale.

    With `run_dir`, the run's own conversion: the one it recorded when it started, even if the source has been
    edited since (a resume reads the samples its checkpoints count); `record` (one rank of the run) records it
    there, which keeps it from being deleted by a later conversion (conversion_use.py)."""
    if is_url(str(path)):  # shards in object storage or behind HTTP: read through the shard cache (remote/)
        check_supported(str(path))
        return str(path)
    path = Path(path)
    kind = source_kind(path)
    if kind == "shards":
        return path
    source = read_source(kind, path)
    parts = fingerprint_parts(source)
    fingerprint = fingerprint_of_parts(parts)
    pinned = recorded_conversion(Path(run_dir), path) if run_dir is not None else None
    root = cache_root(path, cache_dir)
    try:
        with _locked(root / ".lock"):
            if pinned is not None and pinned.fingerprint != fingerprint:
                assert run_dir is not None  # pinned comes from the run folder
                target = _pinned_conversion(path, pinned, parts, Path(run_dir))
                fingerprint, parts = pinned.fingerprint, pinned.parts
            else:
                target = root / fingerprint[:16]
                if not _valid(target, fingerprint):
                    _convert(path, source, root, target, fingerprint)
            if run_dir is not None and record:
                record_use(Path(run_dir), path, target, fingerprint, parts)
    except OSError as error:  # the cache's lock or a use record: the conversion itself says so on its own
        raise ConversionStorageError.from_os_error(error, root, hint=_CACHE_HINT) from None
    return target / "data.yaml"


_CACHE_HINT = "free space there, or set data_cache= to a writable folder with room"


def _pinned_conversion(path: Path, pinned: RecordedConversion, parts: dict, run_dir: Path) -> Path:
    """The conversion the run started on, whose source has changed since; DataSpecError saying what changed when
    that conversion is gone."""
    changes = describe_changes(pinned.parts, parts)
    if _valid(pinned.conversion, pinned.fingerprint):
        log.warning(f"data: {path} has changed since {run_dir} started ({changes}); the run goes on with the "
                    f"conversion it started on, {pinned.conversion} (a new run converts the files as they are now)",
                    extra=EVERY_RANK)
        return pinned.conversion
    raise DataSpecError(f"{path}: {run_dir} was trained on a conversion of it that is gone ({pinned.conversion}), "
                        f"and its files have changed since ({changes}): restore them to resume this run, or start a "
                        f"new one (train.weights={run_dir / 'weights' / 'last.safetensors'} keeps the weights)")


def _convert(path: Path, source: SourceDataset, root: Path, target: Path, fingerprint: str) -> None:
    """Writes the conversion into `target` and deletes the earlier ones no run reads (call it under the lock)."""
    # Said by whichever rank holds the lock: the others wait for it.
    log.info(f"data: converting {path} into shards in {target} (first use, or its files changed)", extra=EVERY_RANK)
    kept = []
    for other in sorted(root.iterdir()):  # earlier conversions of this dataset: its files have changed since
        if not other.is_dir():
            continue
        users = runs_using(other, _manifest(other).get("fingerprint", "")) if other != target else []
        if users:
            kept.append(f"{other.name} (read by {', '.join(str(run) for run in users)})")
        else:  # not in use, or a conversion that was interrupted (no manifest: never read)
            shutil.rmtree(other, ignore_errors=True)
    if kept:
        log.info(f"data: kept {len(kept)} earlier conversion(s) of {path} that runs still read, to resume them: "
                 f"{'; '.join(kept)}", extra=EVERY_RANK)
    try:
        report = write_dataset(source, target, progress=progress_bar_wanted(), storage_hint=_CACHE_HINT)
        manifest = {"version": CACHE_VERSION, "fingerprint": fingerprint, "source": str(path.resolve()),
                    "built_by_pid": os.getpid(), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "written": report.written, "excluded": len(report.excluded)}
        (target / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")  # written last: the commit marker
    except OSError as error:
        shutil.rmtree(target, ignore_errors=True)
        raise ConversionStorageError.from_os_error(error, target, hint=_CACHE_HINT) from None
    except ConversionStorageError:
        shutil.rmtree(target, ignore_errors=True)  # a half conversion is never left to look like one
        raise
    log.info(report.summary(), extra=EVERY_RANK)
    empty = [split for split, count in report.written.items() if count == 0]
    if empty:
        raise DataSpecError(f"{path}: no valid sample in split {', '.join(empty)} ({len(report.excluded)} "
                            f"excluded, each with its reason in {target / 'report.json'})")


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
        return bool(value) and all(isinstance(v, str) and (v.endswith(".tar") or is_url(v)) for v in value)
    if not isinstance(value, str):
        return False
    if is_url(value) or is_url(str(root)):
        return True  # remote splits are shards (spec.py says so when the scheme is not one served)
    return value.endswith(_SHARD_SUFFIXES) or "{" in value or (root / value / INDEX_FILE).is_file()


def fingerprint_parts(source: SourceDataset) -> dict:
    """What the fingerprint is made of, part by part, so that a changed source can be told in words: the class
    names; the contents of the files that describe the dataset (data.yaml, annotation jsons); per split the number of
    images, their names, sizes and mtimes, and the contents of their label files. Label files are small and hashed
    whole (an edit that keeps size and mtime is still seen); images are not (reading every image at every start
    costs minutes on a large dataset, and an image is edited in place far less often than a label)."""
    parts = {"version": CACHE_VERSION, "names": _digest([source.names, source.category_ids]),
             "annotations": _digest([_content(file) for file in source.files])}
    for split, candidates in source.splits.items():
        labels = [c.label_file for c in candidates if c.label_file is not None]
        labels += source.orphan_labels.get(split, [])
        parts[split] = {"images": len(candidates),
                        "image_files": _digest([_stat(c.image_path) for c in candidates]),
                        "labels": _digest([_content(file) for file in labels])}
    return parts


def fingerprint_of_parts(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def fingerprint_of(source: SourceDataset) -> str:
    """sha256 over `fingerprint_parts`: another fingerprint, another conversion."""
    return fingerprint_of_parts(fingerprint_parts(source))


def describe_changes(before: dict, now: dict) -> str:
    """What differs between two `fingerprint_parts`, in words."""
    changes = []
    if before.get("version") != now.get("version"):
        changes.append(f"converted by another yolotr cache version ({before.get('version')})")
    if before.get("names") != now.get("names"):
        changes.append("the class names")
    if before.get("annotations") != now.get("annotations"):
        changes.append("the data yaml or annotation files")
    for split in sorted(set(before) | set(now) - {"version", "names", "annotations"}):
        then, current = before.get(split), now.get(split)
        if not isinstance(then, dict) or not isinstance(current, dict):
            if then != current:
                changes.append(f"split {split} {'added' if then is None else 'removed'}")
            continue
        if then.get("images") != current.get("images"):
            changes.append(f"{split}: {then.get('images')} images then, {current.get('images')} now")
        elif then.get("image_files") != current.get("image_files"):
            changes.append(f"{split}: image files replaced or touched")
        if then.get("labels") != current.get("labels"):
            changes.append(f"{split}: label files edited, added or removed")
    return ", ".join(changes) or "no difference found in its parts"


def _digest(values: list) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _stat(file: Path) -> str:
    try:
        stat = file.stat()
    except OSError:
        return f"{file}\0missing"
    return f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}"


def _content(file: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
    except OSError:
        return f"{file}\0missing"
    return f"{file}\0{hasher.hexdigest()}"


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
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConversionStorageError.from_os_error(error, root, hint=_CACHE_HINT) from None
    return root


def _manifest(target: Path) -> dict:
    try:
        manifest = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _valid(target: Path, fingerprint: str) -> bool:
    manifest = _manifest(target)
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
