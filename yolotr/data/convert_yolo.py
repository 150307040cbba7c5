"""Reads a YOLOv5 dataset: a data.yaml whose splits are image folders, image list files or lists of those, and
`labels/*.txt` beside `images/` with one `class cx cy w h` row (normalised) per object.

Follows YOLOv5's conventions: the label of `.../images/x/a.jpg` is `.../labels/x/a.txt`; an image without a label
file is a background image (no boxes); a row with more than 5 numbers is a polygon (its bounding box is used). A label
file beside the split's labels whose image is not in the split is reported, not silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from yolotr.data.convert import Candidate
from yolotr.data.errors import DataSpecError, SampleError
from yolotr.data.shard_writer import unique_keys
from yolotr.data.spec import parse_names, read_yaml_mapping

# Every image format YOLOv5 accepts is listed, so that ones we cannot store appear in the report.
IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class YoloSource:
    names: list[str]
    splits: dict[str, list[Candidate]]
    orphan_labels: dict[str, list[Path]]  # split → label files in its labels/ folders that no image of it has


def read_yolo_dataset(data_yaml: Path) -> YoloSource:
    data_yaml = Path(data_yaml)
    doc = read_yaml_mapping(data_yaml, "YOLO data yaml", "path/train/val/names")
    names = parse_names(doc.get("names"), where=f"{data_yaml}: key 'names'")
    root = _dataset_root(data_yaml, doc.get("path"))
    splits, orphans = {}, {}
    for split in SPLITS:
        if doc.get(split):
            images = _image_files(root, doc[split], where=f"{data_yaml}: key '{split}'")
            splits[split] = _candidates(images, root)
            orphans[split] = _orphan_labels(splits[split])
    if "train" not in splits:
        raise DataSpecError(f"{data_yaml}: key 'train' is missing")
    return YoloSource(names=names, splits=splits, orphan_labels=orphans)


def _dataset_root(data_yaml: Path, path: object) -> Path:
    """YOLOv5 resolves a relative `path` from its working directory; we try the yaml's folder first."""
    if not path:
        return data_yaml.parent
    path = Path(str(path))
    if path.is_absolute():
        return path
    for candidate in (data_yaml.parent / path, Path.cwd() / path):
        if candidate.is_dir():
            return candidate
    raise DataSpecError(f"{data_yaml}: key 'path': {path} exists neither beside the yaml nor in the working folder")


def _image_files(root: Path, value: object, *, where: str) -> list[Path]:
    entries = value if isinstance(value, list) else [value]
    files: list[Path] = []
    for entry in entries:
        target = Path(str(entry))
        target = target if target.is_absolute() else root / target
        if target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif target.is_file():
            # An image list: one path per line, relative to the list's folder (YOLOv5's rule).
            for line in target.read_text().splitlines():
                if line.strip():
                    image = Path(line.strip())
                    files.append(image if image.is_absolute() else target.parent / image)
        else:
            raise DataSpecError(f"{where}: {target} is neither an image folder nor an image list file")
    if not files:
        raise DataSpecError(f"{where}: no images found in {value!r}")
    return files


def label_path(image: Path) -> Path:
    """YOLOv5's img2label_paths: the last /images/ becomes /labels/, the suffix .txt."""
    text = str(image)
    images_dir, labels_dir = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if images_dir in text:
        head, tail = text.rsplit(images_dir, 1)
        text = head + labels_dir + tail
    return Path(text).with_suffix(".txt")


def _candidates(images: list[Path], root: Path) -> list[Candidate]:
    sources = [_relative(image, root) for image in images]
    keys = unique_keys(str(Path(source).with_suffix("")) for source in sources)
    return [Candidate(key=key, image_path=image, source=source, read_labels=_label_reader(label_path(image)),
                      label_file=label_path(image))
            for key, image, source in zip(keys, images, sources)]


def _orphan_labels(candidates: list[Candidate]) -> list[Path]:
    """Label files in the folders this split's labels live in that belong to no image of the split (an image
    deleted, renamed, or in a format not listed in IMAGE_SUFFIXES)."""
    expected = {c.label_file for c in candidates if c.label_file is not None}
    folders = {label.parent for label in expected}
    present = {p for folder in folders if folder.is_dir() for p in folder.glob("*.txt")}
    return sorted(present - expected)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _label_reader(path: Path):
    def read(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        return read_yolo_label(path, width, height)

    return read


def read_yolo_label(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes (n, 4) x1y1x2y2 and classes (n,) from a YOLO label file; no file means no objects."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return np.zeros((0, 4)), np.zeros(0)
    except (OSError, UnicodeDecodeError) as err:
        raise SampleError("malformed_label_row", f"{path}: cannot read: {err}") from None
    boxes, classes = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise SampleError("malformed_label_row", f"{path}:{number}: {line.strip()!r} is not numeric") from None
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(values) >= 7 and len(values) % 2 == 1:
            points = np.asarray(values[1:]).reshape(-1, 2)  # (k, 2) polygon, normalised
            box = [*points.min(0), *points.max(0)]
        else:
            raise SampleError("malformed_label_row",
                              f"{path}:{number}: {len(values)} numbers; expected 'class cx cy w h' or a polygon")
        classes.append(values[0])
        boxes.append(box)
    pixels = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * [width, height, width, height]
    return pixels, np.asarray(classes, dtype=np.float64)
