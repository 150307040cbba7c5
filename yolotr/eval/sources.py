"""What `yolotr predict --source` reads, as one stream of frames.

A source is one image or video file, a folder of them, a glob (`'data/*.jpg'`), a `.txt` list (one path or URL a
line), a webcam (its integer index), an RTSP/RTMP/HTTP stream (through cv2.VideoCapture), or shards (a split folder
with its `index.json`, the index itself, or one `.tar` with the index beside it).

An unreadable file or a broken video frame does not stop the stream: it comes out as a `Frame` without an image and
with the reason, for predict to count and report.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from yolotr.errors import UsageError
from yolotr.eval.video import VideoReader

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts", ".asf")
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://", "udp://")


class SourceError(UsageError):
    """`--source` names nothing predict can read: a missing path, an unknown kind, an empty folder."""


@dataclass
class Frame:
    image_id: int
    """COCO image id: for a folder, list or glob of images, the file stem when every stem is a number (COCO's
    000000037777.jpg → 37777, as YOLOv5 does) and the position otherwise; in shards, the global sample id (= the val
    gt's); for video frames, the position in the whole stream."""
    name: str
    """Output file name (no directories): the image's own, `<video stem>_<frame>.jpg` for a video frame."""
    image: np.ndarray | None
    """(H,W,3) uint8 RGB, or None when it could not be read (`error` says why)."""
    origin: str
    """The file, URL or webcam it came from."""
    video: VideoReader | None = None
    """The reader of the video this frame belongs to (its fps and size make the annotated video)."""
    error: str | None = None


@dataclass(frozen=True)
class Entry:
    """One item of a source: a still image or a video file / stream / webcam."""

    target: str | int
    kind: str  # "image" | "video" | "stream" | "webcam"


class Source:
    """The frames of `--source`, every `vid_stride`-th frame of each video."""

    def __init__(self, source: str | int | os.PathLike, vid_stride: int = 1) -> None:
        if vid_stride < 1:
            raise SourceError(f"--vid-stride must be >= 1, got {vid_stride}")
        self.spec = source
        self.vid_stride = vid_stride
        self.shards: Path | None = None
        self.shard_name: str | None = None
        self.entries: list[Entry] = []
        self._resolve(source)

    @property
    def live(self) -> bool:
        """A webcam or a stream: frames arrive one at a time and the total is unknown."""
        return any(entry.kind in ("stream", "webcam") for entry in self.entries)

    def __iter__(self) -> Iterator[Frame]:
        if self.shards is not None:
            yield from _iter_shards(self.shards, self.shard_name)
            return
        numbered = _numbered_stems(self.entries)
        position = 0
        for entry, name in zip(self.entries, _output_names(self.entries)):
            if entry.kind == "image":
                path = Path(entry.target)
                image_id = int(path.stem) if numbered else position
                image, error = _read_image_or_reason(path)
                yield Frame(image_id, name, image, str(path), error=error)
                position += 1
                continue
            reader = VideoReader(entry.target, stem=name, vid_stride=self.vid_stride, live=entry.kind != "video")
            for index, image, error in reader:
                yield Frame(position, f"{name}_{index}.jpg", image, reader.name, video=reader, error=error)
                position += 1

    def total_frames(self) -> int | None:
        """Frames the stream will yield, for a progress bar; None when unknown (live sources, shards)."""
        if self.shards is not None or self.live:
            return None
        total = 0
        for entry in self.entries:
            if entry.kind == "image":
                total += 1
            else:
                count = VideoReader.frame_count(entry.target)
                total += -(-count // self.vid_stride) if count > 0 else 0
        return total

    # ------------------------------------------------------------------ resolving the spec
    def _resolve(self, source: str | int | os.PathLike) -> None:
        text = str(source).strip()
        if isinstance(source, int) or text.isdigit():
            self.entries = [Entry(int(text), "webcam")]
            return
        if text.lower().startswith(STREAM_SCHEMES):
            self.entries = [Entry(text, "stream")]
            return
        path = Path(text)
        if not path.exists():
            if glob.has_magic(text):
                matches = [Path(p) for p in sorted(glob.glob(text, recursive=True))]
                self.entries = [e for e in map(_file_entry, matches) if e is not None]
                if not self.entries:
                    raise SourceError(f"--source {text}: the pattern matches no image or video")
                return
            raise SourceError(f"--source {text} does not exist")
        if path.is_dir() and (path / "index.json").is_file():
            self.shards = path / "index.json"
        elif path.name == "index.json":
            self.shards = path
        elif path.suffix == ".tar":
            self.shards, self.shard_name = path.parent / "index.json", path.name
            if not self.shards.is_file():
                raise SourceError(f"--source {path}: shards are read through their index, and {self.shards} is missing")
        elif path.is_dir():
            self.entries = [e for e in map(_file_entry, sorted(path.iterdir())) if e is not None]
            if not self.entries:
                raise SourceError(f"--source {path}: no images ({', '.join(IMAGE_SUFFIXES)}), no videos and no "
                                  "index.json")
        elif path.suffix.lower() == ".txt":
            self.entries = _list_entries(path)
        elif (entry := _file_entry(path)) is not None:
            self.entries = [entry]
        else:
            raise SourceError(f"--source {path}: not an image ({', '.join(IMAGE_SUFFIXES)}), a video "
                              f"({', '.join(VIDEO_SUFFIXES)}), a folder, a glob, a .txt list, a stream or shards")


def _file_entry(path: Path) -> Entry | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Entry(str(path), "image")
    if suffix in VIDEO_SUFFIXES:
        return Entry(str(path), "video")
    return None


def _list_entries(list_file: Path) -> list[Entry]:
    """A .txt list: one image, video or URL a line; relative paths are relative to the list's folder, as in
    YOLOv5's data lists. A listed file that is missing is kept, to be reported as unreadable, not skipped."""
    entries = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith(STREAM_SCHEMES):
            entries.append(Entry(line, "stream"))
            continue
        path = Path(line) if Path(line).is_absolute() else list_file.parent / line
        entry = _file_entry(path)
        if entry is None:
            raise SourceError(f"{list_file}: line {number}: {line} is neither an image nor a video")
        entries.append(entry)
    if not entries:
        raise SourceError(f"--source {list_file}: the list names no image, video or stream")
    return entries


def _numbered_stems(entries: list[Entry]) -> bool:
    """COCO's val images are named by their id: use it when every entry is such an image."""
    stems = [Path(e.target).stem for e in entries if e.kind == "image"]
    return (len(stems) == len(entries) and all(stem.isdigit() for stem in stems)
            and len({int(s) for s in stems}) == len(stems))


def _output_names(entries: list[Entry]) -> list[str]:
    """Each entry's output name: an image's file name, a video's stem; `<stem>_<k>` where two entries share one (a
    recursive glob over folders), so that no output overwrites another."""
    names, used = [], set()
    for entry in entries:
        if entry.kind == "webcam":
            name = f"webcam{entry.target}"
        elif entry.kind == "image":
            name = Path(entry.target).name
        else:
            name = Path(str(entry.target).split("?")[0].rstrip("/")).stem or "stream"
        stem, suffix = (Path(name).stem, Path(name).suffix) if entry.kind == "image" else (name, "")
        unique, k = stem, 1
        while unique.lower() in used:  # by stem: labels/<stem>.txt must not collide either
            unique, k = f"{stem}_{k}", k + 1
        used.add(unique.lower())
        names.append(unique + suffix)
    return names


def _read_image_or_reason(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        return read_image(path), None
    except ValueError as error:
        return None, str(error)


def read_image(path: Path) -> np.ndarray:
    """(H,W,3) uint8 RGB, upright by its EXIF orientation: JPEG and PNG through the training stream's decoder (so a
    prediction sees what training saw), other formats through PIL. Raises ValueError naming the file."""
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
    except SampleError as error:
        raise ValueError(f"{path}: cannot read the image ({_reason(error)})") from error
    except OSError as error:
        raise ValueError(f"{path}: cannot read the image: {error.strerror or error}") from error


def _reason(error) -> str:
    """A SampleError's reason and detail, without the key (`?` until a caller fills it in)."""
    return f"{error.reason}: {error.detail}" if error.detail else error.reason


def _iter_shards(index_path: Path, shard_name: str | None = None) -> Iterator[Frame]:
    """Samples of a split (or of its shard `shard_name`) through its index, with the data stream's reader
    and decoder; a sample that does not decode is a frame without an image."""
    from yolotr.data.decode import JPEG_EXTENSIONS, PNG_EXTENSIONS, decode_image
    from yolotr.data.errors import SampleError
    from yolotr.data.index import load_index
    from yolotr.data.shard_reader import ShardReader

    split = load_index(index_path)
    reader = ShardReader(split)
    try:
        for global_id, key in enumerate(split.keys):
            if shard_name is not None and split.shard_path(int(split.shard_of[global_id])).name != shard_name:
                continue
            name = key.replace("/", "_")
            try:
                members = reader.read(global_id)
                ext = next((e for e in JPEG_EXTENSIONS + PNG_EXTENSIONS if e in members), None)
                if ext is None:
                    raise SampleError("missing_image", f"members {sorted(members)}")
                frame = Frame(global_id, f"{name}.{ext}", decode_image(members[ext], ext), str(index_path))
            except SampleError as error:
                origin = f"{index_path}: sample {key}"
                frame = Frame(global_id, f"{name}.jpg", None, origin, error=f"{origin}: {_reason(error)}")
            yield frame
    finally:
        reader.close()
