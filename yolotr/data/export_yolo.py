"""Writes a shard dataset back out as a YOLOv5 folder: `images/{train,val}/`, `labels/{train,val}/` and `data.yaml`.

So that another trainer (YOLOv5's own train.py, in benchmarks/parity/) sees the very images and boxes yolotr trains
on: the image members are written byte for byte (no re-encoding), the boxes as YOLOv5's normalised
`class cx cy w h` rows. File names are the sample keys, so a prediction on `images/val/<key>.jpg` maps back to the
same sample of the shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from yolotr.data.decode import JPEG_EXTENSIONS, PNG_EXTENSIONS
from yolotr.data.errors import DataSpecError, SampleError
from yolotr.data.index import SplitIndex
from yolotr.data.labels import DetectionLabel, parse_label
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml

SPLITS = ("train", "val")


@dataclass
class ExportReport:
    written: dict[str, int] = field(default_factory=dict)  # split -> images written
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) of unreadable samples

    def summary(self) -> str:
        counts = ", ".join(f"{n} {split}" for split, n in self.written.items())
        skipped = f"; {len(self.skipped)} unreadable samples skipped" if self.skipped else ""
        return f"wrote {counts} images{skipped}"


def yolo_rows(label: DetectionLabel) -> str:
    """The label as YOLOv5's text: one `class cx cy w h` line per box, normalised by the image size."""
    lines = []
    for (x1, y1, x2, y2), cls in zip(label.boxes.tolist(), label.classes.tolist()):
        cx, cy = (x1 + x2) / 2 / label.width, (y1 + y2) / 2 / label.height
        w, h = (x2 - x1) / label.width, (y2 - y1) / label.height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def export_split(split: SplitIndex, out: Path, name: str, report: ExportReport) -> None:
    images, labels = out / "images" / name, out / "labels" / name
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    reader = ShardReader(split)
    written = 0
    try:
        for global_id, key in enumerate(split.keys):
            try:
                members = reader.read(global_id)
                ext = next((e for e in JPEG_EXTENSIONS + PNG_EXTENSIONS if e in members), None)
                if ext is None:
                    raise SampleError("missing_image", f"members {sorted(members)}")
                if "json" not in members:
                    raise SampleError("missing_label", f"members {sorted(members)}")
                label = parse_label(members["json"], nc=split.nc)
            except SampleError as err:
                report.skipped.append((key, str(err)))
                continue
            (images / f"{key}.{ext}").write_bytes(members[ext])
            (labels / f"{key}.txt").write_text(yolo_rows(label))
            written += 1
    finally:
        reader.close()
    report.written[name] = written


def export_yolo(data_yaml: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, ExportReport]:
    """Exports the train and val splits of `data_yaml` (a shard data yaml) into `out`; returns YOLOv5's data.yaml.

    Refuses a non-empty `out` that is not an earlier export (nothing written is lost)."""
    out = Path(out).resolve()
    yaml_path = out / "data.yaml"
    if out.exists() and any(out.iterdir()) and not yaml_path.is_file():
        raise DataSpecError(f"{out}: exists and is not an earlier export (no data.yaml); choose an empty folder")
    spec = load_data_yaml(Path(data_yaml))
    report = ExportReport()
    for name in SPLITS:
        export_split(getattr(spec, name), out, name, report)
    # YOLOv5 resolves a relative `path` against its own checkout, so the root is written absolute.
    doc = {"path": str(out), "train": "images/train", "val": "images/val", "nc": spec.nc,
           "names": dict(enumerate(spec.names))}
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return yaml_path, report
