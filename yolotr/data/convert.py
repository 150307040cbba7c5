"""What both converters (YOLO-txt, COCO) share: validating each source sample and writing a split, with a report
that lists every excluded sample and why, so that nothing is dropped silently."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolotr.data.decode import decode_image, decode_other_format, encode_png
from yolotr.data.errors import REASONS, SampleError
from yolotr.data.index import SplitIndex
from yolotr.data.labels import CleanedBoxes, DetectionLabel, clean_boxes
from yolotr.data.shard_writer import SampleRecord, write_shards

# (boxes (n, 4) x1y1x2y2 pixels, classes (n,)) from the decoded image's (width, height).
LabelReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Candidate:
    """A source sample before validation."""

    key: str
    image_path: Path
    source: str  # the image path as the report and the label's "source" show it (relative to the dataset root)
    read_labels: LabelReader
    declared_size: tuple[int, int] | None = None  # (width, height) the annotation file states, if any
    read_crowd: LabelReader | None = None  # COCO's crowd regions (iscrowd=1), kept apart from the boxes
    label_file: Path | None = None  # YOLO's labels/*.txt of this image (whether it exists or not)


@dataclass(frozen=True)
class Exclusion:
    split: str
    source: str
    reason: str
    detail: str


@dataclass
class ConversionReport:
    excluded: list[Exclusion] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)  # split → samples written
    boxes_written: int = 0
    boxes_clipped: int = 0  # extended beyond the image, clipped to it
    boxes_dropped: int = 0  # entirely outside the image
    boxes_zero_size: int = 0  # zero width or height as given: dropped, a label row to fix
    backgrounds: int = 0  # images written without a box (an empty or absent label file: YOLOv5's backgrounds)
    emptied: int = 0  # images written without a box because every box of their label was dropped
    reencoded: int = 0  # images in formats other than JPEG/PNG, stored as lossless PNG
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "written": self.written, "boxes_written": self.boxes_written, "boxes_clipped": self.boxes_clipped,
            "boxes_dropped_outside_image": self.boxes_dropped, "boxes_dropped_zero_size": self.boxes_zero_size,
            "background_images": self.backgrounds, "images_left_without_boxes": self.emptied,
            "reencoded_as_png": self.reencoded, "notes": self.notes,
            "excluded": [asdict(e) | {"meaning": REASONS.get(e.reason, "")} for e in self.excluded],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")

    def summary(self) -> str:
        lines = [f"{split}: {count} samples written" for split, count in self.written.items()]
        lines.append(f"boxes: {self.boxes_written} written, {self.boxes_clipped} clipped to their image, "
                     f"{self.boxes_dropped} dropped (entirely outside their image)"
                     + (f", {self.boxes_zero_size} dropped (zero width or height)" if self.boxes_zero_size else ""))
        lines.append(f"background images (no boxes: an empty or missing label file): {self.backgrounds}")
        if self.emptied:
            lines.append(f"images written without boxes because every box of their label was dropped: "
                         f"{self.emptied}")
        if self.reencoded:
            lines.append(f"images stored as lossless PNG (not JPEG or PNG at the source): {self.reencoded}")
        lines.append(f"excluded samples: {len(self.excluded)}")
        lines += [f"  [{e.split}] {e.source}: {e.reason}: {e.detail}" for e in self.excluded[:50]]
        if len(self.excluded) > 50:
            lines.append(f"  ... {len(self.excluded) - 50} more in the report file")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def read_image_file(path: Path) -> tuple[bytes, str, np.ndarray | None]:
    """The bytes to store and their format ("jpg"/"png"), told by content, not by the file name. JPEG and PNG keep
    their original bytes; any other format PIL decodes (BMP, TIFF, WebP, ...) is stored as lossless PNG of its
    pixels, which are returned too (None for JPEG/PNG, not decoded yet)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SampleError("missing_file", f"{path}: {err.strerror or err}") from None
    if not data:  # else reported as a format nobody decodes, which sends the user looking for the wrong problem
        raise SampleError("invalid_image", "the file is empty (0 bytes)")
    if data[:3] == b"\xff\xd8\xff":
        return data, "jpg", None
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data, "png", None
    pixels = decode_other_format(data)  # (H, W, 3), upright
    return encode_png(pixels), "png", pixels


def build_record(candidate: Candidate, *, nc: int) -> tuple[SampleRecord, CleanedBoxes, bool]:
    """Validates one candidate; returns the record, its boxes' cleaning counts, and whether the image was
    re-encoded."""
    data, ext, pixels = read_image_file(candidate.image_path)
    height, width = (decode_image(data, ext) if pixels is None else pixels).shape[:2]  # decodable, its true size
    if candidate.declared_size is not None and candidate.declared_size != (width, height):
        raise SampleError("image_size_mismatch", f"the annotations say {candidate.declared_size[0]}x"
                                                 f"{candidate.declared_size[1]}, the image is {width}x{height}")
    boxes, classes = candidate.read_labels(width, height)
    cleaned = clean_boxes(boxes, classes, width=width, height=height, nc=nc)
    crowd_boxes, crowd_classes = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    if candidate.read_crowd is not None:
        crowd = clean_boxes(*candidate.read_crowd(width, height), width=width, height=height, nc=nc)
        crowd_boxes, crowd_classes = crowd.boxes, crowd.classes
    label = DetectionLabel(boxes=cleaned.boxes, classes=cleaned.classes, width=width, height=height,
                           source=candidate.source, crowd_boxes=crowd_boxes, crowd_classes=crowd_classes)
    record = SampleRecord(key=candidate.key, image=data, image_ext=ext, label=label)
    return record, cleaned, pixels is not None


def write_split(candidates: Iterable[Candidate], out_dir: Path, *, split: str, nc: int, names: list[str],
                report: ConversionReport, samples_per_shard: int = 1000, shard_bytes: int | None = None) -> SplitIndex:
    """Validates and writes one split to `out_dir/split/`; invalid samples go to the report, not the shards."""

    def records() -> Iterator[SampleRecord]:
        for candidate in candidates:
            try:
                record, cleaned, reencoded = build_record(candidate, nc=nc)
            except SampleError as err:
                report.excluded.append(Exclusion(split=split, source=candidate.source, reason=err.reason,
                                                 detail=err.detail))
                continue
            report.boxes_written += len(record.label.classes)
            report.boxes_clipped += cleaned.clipped
            report.boxes_dropped += cleaned.dropped
            report.boxes_zero_size += cleaned.zero_size
            report.reencoded += reencoded
            if not len(record.label.classes):  # a background as the label file says, or one its drops made
                dropped = cleaned.dropped + cleaned.zero_size
                report.emptied += dropped > 0
                report.backgrounds += dropped == 0
            yield record

    index = write_shards(records(), out_dir / split, nc=nc, names=names, samples_per_shard=samples_per_shard,
                         shard_bytes=shard_bytes)
    report.written[split] = index.num_samples
    return index
