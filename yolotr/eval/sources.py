"""What `yolotr predict --source` reads: one image, a folder of images, or shards (a split folder with its
`index.json`, the index itself, or one `.tar` with the index beside it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class SourceImage:
    image_id: int
    """COCO image id: in a folder, the file stem when every stem is a number (COCO's 000000037777.jpg → 37777, as
    YOLOv5 does) and the position in the sorted folder otherwise; in shards, the global sample id (= the val gt's)."""
    name: str
    """File name to save the drawn image under (no directories)."""
    image: np.ndarray
    """(H,W,3) uint8 RGB."""


def iter_source(source: str | os.PathLike) -> Iterator[SourceImage]:
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"--source {path} does not exist")
    if path.is_dir() and (path / "index.json").is_file():
        yield from _iter_shards(path / "index.json")
    elif path.name == "index.json":
        yield from _iter_shards(path)
    elif path.suffix == ".tar":
        yield from _iter_shards(path.parent / "index.json", shard_name=path.name)
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"--source {path}: no images ({', '.join(IMAGE_SUFFIXES)}) and no index.json")
        stems = [file.stem for file in files]
        numbered = all(stem.isdigit() for stem in stems) and len({int(s) for s in stems}) == len(stems)
        for position, file in enumerate(files):
            yield SourceImage(int(file.stem) if numbered else position, file.name, _read_image(file))
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        yield SourceImage(0, path.name, _read_image(path))
    else:
        raise ValueError(f"--source {path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a folder or shards")


def _read_image(path: Path) -> np.ndarray:
    """(H,W,3) uint8 RGB, upright by its EXIF orientation: JPEG and PNG through the training stream's decoder (so a
    prediction sees what training saw), other formats through PIL."""
    from yolotr.data.decode import JPEG_EXTENSIONS, PNG_EXTENSIONS, decode_image
    from yolotr.data.errors import SampleError

    ext = path.suffix.lower().lstrip(".")
    try:
        if ext in JPEG_EXTENSIONS + PNG_EXTENSIONS:
            return decode_image(path.read_bytes(), ext)
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I"):  # 16/32-bit integer grey (e.g. TIFF): the top 8 bits of 16, as cv2 does
                grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(image.convert("RGB"))  # (H,W,3), a writable copy
    except (OSError, SampleError) as error:
        raise ValueError(f"{path}: cannot read the image: {error}") from error


def _iter_shards(index_path: Path, shard_name: str | None = None) -> Iterator[SourceImage]:
    """Samples of a split (or of its shard `shard_name`) through its index, with the data stream's reader
    and decoder."""
    from yolotr.data.decode import JPEG_EXTENSIONS, PNG_EXTENSIONS, decode_image
    from yolotr.data.index import load_index
    from yolotr.data.shard_reader import ShardReader

    if not index_path.is_file():
        raise ValueError(f"--source {shard_name}: shards are read through their index, and {index_path} is missing")
    split = load_index(index_path)
    reader = ShardReader(split)
    try:
        for global_id, key in enumerate(split.keys):
            if shard_name is not None and split.shard_path(int(split.shard_of[global_id])).name != shard_name:
                continue
            members = reader.read(global_id)
            ext = next((e for e in JPEG_EXTENSIONS + PNG_EXTENSIONS if e in members), None)
            if ext is None:
                raise ValueError(f"{index_path}: sample {key} has no image member ({sorted(members)})")
            yield SourceImage(global_id, f"{key.replace('/', '_')}.{ext}", decode_image(members[ext], ext))
    finally:
        reader.close()
