"""Reads COCO instances json files (`bbox` = [x, y, w, h] in pixels).

`--src` is one instances json or a folder holding `annotations/instances_<split>*.json` (COCO's layout). The split
of a file is its name without `instances_` and a trailing year: `instances_val2017.json` → `val`. Category ids
(COCO's are 1..90 with gaps) become class indices 0..K-1 in increasing id order. Crowd annotations (`iscrowd: 1`)
are kept apart as crowd regions (labels.py): training leaves them out, as YOLOv5's COCO labels do, and COCO
evaluation ignores the detections that fall in them, as COCO's own evaluation does. The report's notes count them.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolotr.data.convert import Candidate
from yolotr.data.errors import DataSpecError
from yolotr.data.shard_writer import unique_keys


@dataclass(frozen=True)
class CocoSource:
    names: list[str]
    category_ids: list[int]  # COCO's id of each contiguous class
    splits: dict[str, list[Candidate]]
    notes: list[str]
    files: list[Path]  # the annotation files read


def read_coco_dataset(src: Path, *, images_dir: Path | None = None) -> CocoSource:
    src = Path(src)
    files = sorted((src / "annotations").glob("instances_*.json")) if src.is_dir() else [src]
    if not files:
        raise DataSpecError(f"{src}: no annotations/instances_*.json in this folder")
    names: list[str] | None = None
    ids: list[int] = []
    splits: dict[str, list[Candidate]] = {}
    notes: list[str] = []
    for file in files:
        doc = _load(file)
        split, folder = _split_name(file)
        file_names, category_ids = _categories(doc, file)
        if names is None:
            names, ids = file_names, list(category_ids)
        elif names != file_names:
            raise DataSpecError(f"{file}: key 'categories' differs from the first annotation file's")
        class_of = {cat: index for index, cat in enumerate(category_ids)}
        candidates, crowd = _candidates(doc, file, class_of, _image_root(file, folder, doc, images_dir))
        if split in splits:
            raise DataSpecError(f"{file}: a second annotation file for split '{split}'")
        splits[split] = candidates
        if crowd:
            notes.append(f"{split}: {crowd} crowd annotations (iscrowd=1) kept as crowd regions: not trained on, "
                         "ignored by COCO evaluation")
    return CocoSource(names=names or [], category_ids=ids, splits=splits, notes=notes, files=files)


def _load(file: Path) -> dict:
    try:
        doc = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataSpecError(f"{file}: cannot read the COCO json: {err}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataSpecError(f"{file}: key '{key}' is missing or not a list")
    return doc


def _split_name(file: Path) -> tuple[str, str]:
    """('val', 'val2017') from instances_val2017.json."""
    folder = file.stem.removeprefix("instances_")
    return re.sub(r"\d+$", "", folder) or folder, folder


def _categories(doc: dict, file: Path) -> tuple[list[str], list[int]]:
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in doc["categories"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataSpecError(f"{file}: key 'categories': each needs an integer id and a name ({err!r})") from None
    if not categories:
        raise DataSpecError(f"{file}: key 'categories' is empty")
    return [name for _, name in categories], [cat for cat, _ in categories]


def _image_root(file: Path, folder: str, doc: dict, images_dir: Path | None) -> Path:
    """Where `file_name` is relative to: --images, else the first of COCO's usual places that has the images."""
    if images_dir is not None:
        return Path(images_dir)
    base = file.parent.parent if file.parent.name == "annotations" else file.parent
    candidates = [base / "images" / folder, base / folder, base / "images", base, file.parent]
    first = next((str(image.get("file_name", "")) for image in doc["images"]), "")
    for candidate in candidates:
        if (candidate / first).is_file():
            return candidate
    raise DataSpecError(f"{file}: cannot find image {first!r} in any of {[str(c) for c in candidates]}; "
                        f"pass --images DIR")


def _candidates(doc: dict, file: Path, class_of: dict[int, int], root: Path) -> tuple[list[Candidate], int]:
    boxes_of: dict[int, list[list[float]]] = defaultdict(list)
    crowd_of: dict[int, list[list[float]]] = defaultdict(list)
    for number, annotation in enumerate(doc["annotations"]):
        try:
            image_id, category = int(annotation["image_id"]), int(annotation["category_id"])
            x, y, w, h = (float(v) for v in annotation["bbox"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataSpecError(f"{file}: key 'annotations[{number}]': needs image_id, category_id and a 4-number "
                                f"bbox ({err!r})") from None
        # An unknown category id becomes class -1, which validation reports as out of range for that image.
        target = crowd_of if annotation.get("iscrowd", 0) else boxes_of
        target[image_id].append([class_of.get(category, -1), x, y, x + w, y + h])
    images = sorted(doc["images"], key=lambda image: str(image.get("file_name", "")))
    keys = unique_keys(str(Path(str(image.get("file_name", ""))).with_suffix("")) for image in images)
    candidates = []
    for key, image in zip(keys, images):
        try:
            rows = np.asarray(boxes_of.get(int(image["id"]), []), dtype=np.float64).reshape(-1, 5)
            crowd_rows = np.asarray(crowd_of.get(int(image["id"]), []), dtype=np.float64).reshape(-1, 5)
            size = (int(image["width"]), int(image["height"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DataSpecError(f"{file}: key 'images': {image!r} needs id, file_name, width and height "
                                f"({err!r})") from None
        candidates.append(Candidate(key=key, image_path=root / str(image["file_name"]), source=str(image["file_name"]),
                                    read_labels=_fixed_labels(rows), declared_size=size,
                                    read_crowd=_fixed_labels(crowd_rows) if len(crowd_rows) else None))
    return candidates, sum(len(rows) for rows in crowd_of.values())


def _fixed_labels(rows: np.ndarray):
    """rows: (n, 5) [class, x1, y1, x2, y2] pixels."""

    def read(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        return rows[:, 1:5], rows[:, 0]

    return read
