"""`yolotr data check DIR [--json]`: verifies shards against their index and summarises the dataset.

DIR is a dataset folder with data.yaml, a split folder with index.json, or either file. Exits 1 if anything is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from yolotr import console
from yolotr.data.errors import DataSpecError
from yolotr.data.index import INDEX_FILE, SplitIndex, load_index
from yolotr.data.remote.location import RemoteOptions, is_url
from yolotr.data.remote.split import remote_split
from yolotr.data.spec import load_data_yaml, parse_names, read_yaml_mapping, resolve_split

if TYPE_CHECKING:
    from yolotr.data.check import SplitCheck

_SPLITS = ("train", "val", "test")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.splitlines()[0]
    parser.add_argument("dir", help="dataset folder (data.yaml), split folder (index.json), or the file; or the URL "
                                    "of one (https://, s3://, gs://)")
    parser.add_argument("--json", action="store_true", help="print the report as json")


def run(args: argparse.Namespace) -> int:
    from yolotr.data.check import check_split  # decodes images: imports torch

    names, splits = load_splits(args.dir)
    results = {name: check_split(split) for name, split in splits.items()}
    if args.json:
        console.result(json.dumps({"ok": all(r.ok for r in results.values()),
                          "splits": {n: r.to_json(names) for n, r in results.items()}}, indent=1))
    else:
        for name, result in results.items():
            console.result(format_check(name, result, names))
    return 0 if all(r.ok for r in results.values()) else 1


def load_splits(target: Path | str) -> tuple[list[str], dict[str, SplitIndex]]:
    """Class names and the splits to check, from any of the accepted targets."""
    if is_url(str(target)):
        return _remote_splits(str(target))
    target = Path(target)
    if target.is_dir():
        target = target / "data.yaml" if (target / "data.yaml").is_file() else target / INDEX_FILE
    if target.name == INDEX_FILE or target.suffix == ".json":
        index = load_index(target)
        return index.names or [str(i) for i in range(index.nc)], {target.parent.name: index}
    doc = read_yaml_mapping(target, "data yaml", "path/train/val/nc/names")
    names = parse_names(doc.get("names"), where=f"{target}: key 'names'")
    root = Path(doc.get("path") or ".")
    root = root if root.is_absolute() else target.parent / root
    # The yaml's nc is what the stream checks class ids against.
    splits = {s: dataclasses.replace(resolve_split(root, doc[s], where=f"{target}: key '{s}'"), nc=len(names),
                                     names=names) for s in _SPLITS if doc.get(s)}
    if not splits:
        raise DataSpecError(f"{target}: no train/val/test entries")
    return names, splits


def _remote_splits(url: str) -> tuple[list[str], dict[str, SplitIndex]]:
    """A remote data.yaml, index.json or folder holding a data.yaml: its shards are checked from the shard cache."""
    if url.endswith(".json"):
        index = remote_split(url, url, where=url, options=RemoteOptions())
        return index.names or [str(i) for i in range(index.nc)], {url.rstrip("/").rpartition("/")[0]: index}
    yaml_url = url if url.endswith((".yaml", ".yml")) else url.rstrip("/") + "/data.yaml"
    spec = load_data_yaml(yaml_url, splits=())
    return spec.names, {name: split for name, split in (("train", spec.train), ("val", spec.val)) if split}


def format_check(name: str, result: SplitCheck, names: list[str]) -> str:
    lines = [f"{name}: {'OK' if result.ok else 'PROBLEMS'} - {result.shards} shards, {result.samples_indexed} samples "
             f"indexed, {result.samples_ok} readable, {len(result.corrupt)} corrupt, "
             f"{result.images_without_boxes} without boxes",
             f"  classes: {len(names)}; boxes per class: " + ", ".join(
                 f"{names[c] if c < len(names) else c}={n}" for c, n in sorted(result.boxes_per_class.items()))]
    lines += [f"  shard {file}: {problem}" for file, problem in result.shard_problems]
    lines += [f"  corrupt {key}: {reason} ({detail})" for key, reason, detail in result.corrupt[:20]]
    if len(result.corrupt) > 20:
        lines.append(f"  ... {len(result.corrupt) - 20} more corrupt samples (--json lists all)")
    return "\n".join(lines)
