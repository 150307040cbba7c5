"""A split behind a URL: its index.json read through fsspec, its shards left where they are until a reader needs
them (cache.py). Remote shards need their index.json (written by `yolotr data shard` beside them): indexing a remote
tar by reading it would download it at every start."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import braceexpand

from yolotr.data.errors import DataSpecError, RemoteDataError
from yolotr.data.index import INDEX_FILE, SplitIndex, index_from_json
from yolotr.data.remote.cache import RemoteShards
from yolotr.data.remote.fetch import read_bytes
from yolotr.data.remote.location import RemoteOptions, check_supported, is_url, join, parent


def read_remote_text(url: str, options: RemoteOptions, *, what: str) -> str:
    check_supported(url)
    try:
        return read_bytes(url, options).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataSpecError(f"{url}: the {what} is not utf-8 text ({err})") from None


def remote_root(yaml_location: Path | str, path_key: object) -> str | Path:
    """The root that relative splits resolve against: the yaml's `path` key when it is a URL, else that path under
    the folder of a remote yaml (a local yaml with a URL `path` gives the URL)."""
    if is_url(path_key):
        return str(path_key).rstrip("/")
    if not isinstance(yaml_location, str):
        return yaml_location.parent
    folder = parent(yaml_location)
    relative = str(path_key or ".").strip("/")
    return folder if relative in ("", ".") else join(folder, relative)


def remote_split(root: Path | str, value: object, *, where: str, options: RemoteOptions) -> SplitIndex:
    """The split `value` (an index URL, a folder URL, or shard URLs) under `root`; errors name `where` and the URL."""
    given = value if isinstance(value, list) else [value]
    if not all(isinstance(p, str) and p for p in given):
        raise DataSpecError(f"{where}: expected an index.json, a folder or shard files, got {value!r}")
    patterns = [str(p) for p in given]

    def located(name: str) -> str:
        if is_url(name):
            return name
        if isinstance(root, str):
            return join(root, name)
        return str(root / name)

    single = len(patterns) == 1 and "{" not in patterns[0] and not patterns[0].endswith(".tar")
    if single:
        url = located(patterns[0])
        index_url = url if url.endswith(".json") else join(url, INDEX_FILE)
        return _load_remote_index(index_url, where=where, options=options)
    try:
        urls = [located(name) for pattern in patterns for name in braceexpand.braceexpand(pattern)]
    except (TypeError, ValueError) as err:
        raise DataSpecError(f"{where}: cannot expand shard list {value!r}: {err}") from None
    folders = {parent(url) for url in urls}
    if len(folders) != 1:
        raise DataSpecError(f"{where}: remote shard files must share one folder (with its {INDEX_FILE}), got "
                            f"{sorted(folders)}")
    folder = folders.pop()
    index = _load_remote_index(join(folder, INDEX_FILE), where=where, options=options)
    by_file = {entry.file: entry for entry in index.shards}
    names = [url[len(folder) + 1:] for url in urls]
    missing = [url for url, name in zip(urls, names) if name not in by_file]
    if missing:
        raise DataSpecError(f"{where}: shard files not listed in {join(folder, INDEX_FILE)}: {missing}")
    return dataclasses.replace(index, shards=[by_file[name] for name in names])


def _load_remote_index(url: str, *, where: str, options: RemoteOptions) -> SplitIndex:
    check_supported(url, where)
    try:
        text = read_remote_text(url, options, what="index")
    except RemoteDataError as err:
        raise RemoteDataError(f"{where}: index {err}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataSpecError(f"{url}: cannot read the index: {err}") from None
    return index_from_json(doc, Path(), where=url, remote=RemoteShards(base_url=parent(url), options=options))
