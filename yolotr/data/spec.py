"""`data.yaml`, in the spirit of YOLOv5's data yaml, pointing at shards instead of image folders:

    path: .                 # dataset root; relative paths are relative to this yaml file's folder
    train: train/index.json # an index file, a folder holding index.json, or shard files (list or {000..009} pattern)
    val: val/index.json     # any of them may be a URL (s3://bucket/set/val, https://host/set/val/index.json)
    nc: 4
    names: [circle, square, triangle, cross]   # or YOLOv5's {0: circle, 1: square, ...}
"""

from __future__ import annotations

import dataclasses
import tarfile
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import yaml

from yolotr.data.errors import DataSpecError
from yolotr.data.index import INDEX_FILE, SplitIndex, load_index, scan_shard
from yolotr.data.remote.location import RemoteOptions, check_supported, is_url
from yolotr.data.remote.split import read_remote_text, remote_root, remote_split


@dataclass(frozen=True)
class DataSpec:
    names: list[str]
    nc: int
    train: SplitIndex | None  # None only when the caller did not ask for it (`yolotr val` needs val alone)
    val: SplitIndex | None
    yaml_file: str
    category_ids: list[int] | None = None  # COCO's own id of each class (a COCO conversion), for results files


def read_yaml_mapping(path: Path, what: str, keys: str) -> dict:
    """`yaml.safe_load` of a file that must hold a mapping (a data yaml of ours or of YOLOv5); errors name the file
    and say what it should have been."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataSpecError(f"{path}: {what} not found") from None
    except OSError as err:
        raise DataSpecError(f"{path}: cannot read the {what}: {err}") from None
    return _yaml_mapping(text, path, what, keys)


def _yaml_mapping(text: str, path: Path | str, what: str = "data yaml", keys: str = "path/train/val/nc/names") -> dict:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DataSpecError(f"{path}: cannot read the {what}: {err}") from None
    if not isinstance(doc, dict):
        raise DataSpecError(f"{path}: expected a mapping with keys {keys}")
    return doc


def load_data_yaml(path: str | Path, splits: tuple[str, ...] = ("train", "val"),
                   remote: RemoteOptions | None = None) -> DataSpec:
    """Reads a data yaml and the indexes of its splits (`splits` must be there, the others may be missing); errors
    name the file and the key. The yaml, its `path` and its splits may be URLs (remote/): `remote` says how their
    shards are fetched and cached."""
    remote = remote or RemoteOptions()
    if is_url(str(path)):
        path = str(path)
        doc = _yaml_mapping(read_remote_text(path, remote, what="data yaml"), path)
    else:
        path = Path(path)
        doc = read_yaml_mapping(path, "data yaml", "path/train/val/nc/names")
    names = parse_names(doc.get("names"), where=f"{path}: key 'names'")
    nc = doc.get("nc", len(names))
    if not isinstance(nc, int) or nc <= 0 or nc != len(names):
        raise DataSpecError(f"{path}: key 'nc': {nc!r} does not match the {len(names)} names")
    root: Path | str
    if isinstance(path, str) or is_url(doc.get("path")):
        root = remote_root(path, doc.get("path"))
    else:
        root = Path(doc.get("path") or ".")
        root = root if root.is_absolute() else path.parent / root
    found: dict[str, SplitIndex | None] = {}
    for split in ("train", "val"):
        if doc.get(split) in (None, ""):
            if split not in splits:
                found[split] = None
                continue
            raise DataSpecError(f"{path}: key '{split}' is missing (an index.json, a shard folder or shard files)")
        index = resolve_split(root, doc[split], where=f"{path}: key '{split}'", remote=remote)
        if index.nc > nc:
            raise DataSpecError(f"{path}: key 'nc': {nc}, but {index.index_file} was written with nc={index.nc}")
        found[split] = dataclasses.replace(index, nc=nc, names=names)
    category_ids = doc.get("category_ids")
    if category_ids is not None and (not isinstance(category_ids, list) or len(category_ids) != nc
                                     or not all(isinstance(c, int) for c in category_ids)):
        raise DataSpecError(f"{path}: key 'category_ids': expected {nc} integers (COCO's id of each class)")
    return DataSpec(names=names, nc=nc, train=found["train"], val=found["val"], yaml_file=str(path),
                    category_ids=category_ids)


def check_remote_schemes(data: str | Path) -> None:
    """RemoteDataError (exit 2) when `data`, or a split or `path` of the local data yaml it names, is a URL whose
    scheme is not served or whose package is missing: cheap, so a start can say it before it makes anything."""
    if is_url(str(data)):
        check_supported(str(data))
        return
    path = Path(data)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return  # load_data_yaml says what is wrong with it
    if not isinstance(doc, dict):
        return
    for key in ("path", "train", "val", "test"):
        given = doc.get(key)
        values = given if isinstance(given, list) else [given]
        for value in values:
            if isinstance(value, str) and is_url(value):
                check_supported(value, where=f"{path}: key '{key}'")


def write_data_yaml(path: str | Path, *, names: list[str], splits: dict[str, str],
                    category_ids: list[int] | None = None) -> Path:
    """Writes a data yaml whose split entries (relative to the yaml's folder) point at index files."""
    path = Path(path)
    doc = {"path": ".", **splits, "nc": len(names), "names": list(names)}
    if category_ids is not None:
        doc["category_ids"] = list(category_ids)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def parse_names(value: object, *, where: str) -> list[str]:
    """Class names from a list, or from YOLOv5's {index: name} mapping with indices 0..K-1."""
    if isinstance(value, dict):
        try:
            indexed = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise DataSpecError(f"{where}: mapping keys must be class indices") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise DataSpecError(f"{where}: class indices must be 0..{len(indexed) - 1}, got {sorted(indexed)}")
        return [indexed[i] for i in range(len(indexed))]
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    raise DataSpecError(f"{where}: expected a non-empty list of class names or an {{index: name}} mapping")


def resolve_split(root: Path | str, value: object, *, where: str, remote: RemoteOptions | None = None) -> SplitIndex:
    """A split from an index file, a folder with index.json, or shard files (indexed by reading them if needed);
    remote ones (a URL `root` or `value`) from their index.json."""
    if isinstance(root, str) or is_url(value) or (isinstance(value, list) and any(is_url(v) for v in value)):
        return remote_split(root, value, where=where, options=remote or RemoteOptions())
    if isinstance(value, str) and not any(c in value for c in "{}") and not value.endswith(".tar"):
        target = root / value
        index_path = target / INDEX_FILE if target.is_dir() else target
        try:
            return load_index(index_path)
        except DataSpecError as err:
            raise DataSpecError(f"{where}: {err}") from None
    patterns = value if isinstance(value, list) else [value]
    try:
        files = [root / name for pattern in patterns for name in braceexpand.braceexpand(str(pattern))]
    except (TypeError, ValueError) as err:
        raise DataSpecError(f"{where}: cannot expand shard list {value!r}: {err}") from None
    missing = [str(f) for f in files if not f.is_file()]
    if not files or missing:
        raise DataSpecError(f"{where}: shard files not found: {missing or value!r}")
    return _index_for_files(files, where=where)


def _index_for_files(files: list[Path], *, where: str) -> SplitIndex:
    """Uses the index beside the shards when it covers them, else indexes the shards by reading them (slow)."""
    directory = files[0].parent
    index_path = directory / INDEX_FILE
    if all(f.parent == directory for f in files) and index_path.is_file():
        index = load_index(index_path)
        by_file = {s.file: s for s in index.shards}
        if all(f.name in by_file for f in files):
            return dataclasses.replace(index, shards=[by_file[f.name] for f in files])
    try:
        shards = [scan_shard(f, file=str(f.relative_to(directory))) for f in files]
    except (OSError, ValueError, tarfile.TarError) as err:
        raise DataSpecError(f"{where}: cannot index shard: {err}") from None
    # nc=1 is a placeholder: load_data_yaml sets the yaml's nc, and the stream rejects class ids beyond it.
    return SplitIndex(directory=directory, shards=shards, nc=1, index_file=f"{where} (indexed by reading)")

