"""Everything `yolotr predict` writes: drawn images, annotated videos, YOLO txt labels, crops and the COCO json.

Layout of the output folder (YOLOv5's, plus the json):
    <image name>            each image with its boxes drawn (.jpg/.png kept, other formats as .jpg)
    <video stem>.mp4        each video, webcam or stream with its boxes drawn
    labels/<stem>.txt       `class cx cy w h conf` per box, normalised to the image (`<video stem>_<frame>.txt`)
    crops/<class>/<stem>.jpg  each box cut out of the original image
    predictions.json        COCO results (image_id, category_id, bbox x,y,w,h in original pixels, score)
    images.json             each image_id's file name and size, like a COCO gt's `images`

The folder is made by the first file written, so a run that reads nothing leaves no empty folder behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from yolotr.eval.plots.drawing import draw_boxes, save_image
from yolotr.eval.sources import Frame
from yolotr.eval.video import VideoReader, VideoSink

DRAWN_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class OutputOptions:
    draw: bool = True
    """Write each image (or video) with its boxes drawn."""
    save_txt: bool = False
    save_crop: bool = False
    line_width: int | None = None
    """Box line width in pixels; default: scaled to the image (1 per 200 px of its short side)."""
    vid_stride: int = 1


@dataclass
class WrittenFiles:
    predictions_json: Path | None = None
    images_json: Path | None = None
    videos: list[Path] = field(default_factory=list)
    labels: int = 0
    crops: int = 0
    images: int = 0


class PredictionWriter:
    def __init__(self, out: Path, names: list[str], options: OutputOptions, category_ids: list[int] | None) -> None:
        self.out = Path(out)
        self.names = names
        self.options = options
        self.category_ids = category_ids
        self.results: list[dict] = []
        self.images_meta: list[dict] = []
        self.written = WrittenFiles()
        self._sinks: dict[int, VideoSink] = {}  # id(VideoReader) → its annotated video
        self._crop_counts: dict[str, int] = {}

    def add(self, frame: Frame, rows: np.ndarray) -> None:
        """One predicted frame; rows (n,7) [image_id, x, y, w, h, score, cls] in the frame's original pixels."""
        height, width = frame.image.shape[:2]
        self.results.extend(_coco_results(rows, self.category_ids))
        self.images_meta.append({"id": frame.image_id, "file_name": frame.name, "width": width, "height": height})
        stem = Path(frame.name).stem
        if self.options.save_txt and len(rows):
            self._write_label(rows, stem, width, height)
        if self.options.save_crop:
            self._write_crops(frame.image, rows, stem)
        if not self.options.draw:
            return
        drawn = self._draw(frame.image, rows)
        if frame.video is None:
            name = frame.name if Path(frame.name).suffix.lower() in DRAWN_SUFFIXES else f"{stem}.jpg"
            save_image(torch.from_numpy(drawn).permute(2, 0, 1), self.out / name)
            self.written.images += 1
        else:
            self._sink(frame.video).write(drawn)

    def close(self) -> WrittenFiles:
        """Finish the videos and write the json files (nothing at all when no frame was predicted)."""
        for sink in self._sinks.values():
            sink.close()
        if self.images_meta:
            self.out.mkdir(parents=True, exist_ok=True)
            self.written.predictions_json = self.out / "predictions.json"
            self.written.predictions_json.write_text(json.dumps(self.results))
            self.written.images_json = self.out / "images.json"
            self.written.images_json.write_text(json.dumps(self.images_meta, indent=1))
        return self.written

    # ------------------------------------------------------------------ one kind of output each
    def _draw(self, image: np.ndarray, rows: np.ndarray) -> np.ndarray:
        chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # (H,W,3) -> (3,H,W)
        boxes = box_convert(torch.from_numpy(rows[:, 1:5]).float(), in_fmt="xywh", out_fmt="xyxy")  # (n,4)
        drawn = draw_boxes(chw, boxes, torch.from_numpy(rows[:, 6]), self.names, scores=torch.from_numpy(rows[:, 5]),
                           width=self.options.line_width)
        return drawn.permute(1, 2, 0).numpy()  # (3,H,W) -> (H,W,3)

    def _sink(self, reader: VideoReader) -> VideoSink:
        sink = self._sinks.get(id(reader))
        if sink is None:
            sink = VideoSink(self.out / f"{reader.stem}.mp4", reader.fps, self.options.vid_stride)
            self._sinks[id(reader)] = sink
            self.written.videos.append(sink.path)
        return sink

    def _write_label(self, rows: np.ndarray, stem: str, width: int, height: int) -> None:
        x, y, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        table = np.column_stack([rows[:, 6], (x + w / 2) / width, (y + h / 2) / height, w / width, h / height,
                                 rows[:, 5]])  # (n,6) class cx cy w h conf
        lines = "".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f} {r[5]:.5f}\n" for r in table)
        path = self.out / "labels" / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(lines)
        self.written.labels += 1

    def _write_crops(self, image: np.ndarray, rows: np.ndarray, stem: str) -> None:
        height, width = image.shape[:2]
        for row in rows:
            x1, y1 = int(np.floor(max(row[1], 0))), int(np.floor(max(row[2], 0)))
            x2, y2 = int(np.ceil(min(row[1] + row[3], width))), int(np.ceil(min(row[2] + row[4], height)))
            if x2 <= x1 or y2 <= y1:
                continue
            name = self.names[int(row[6])]
            key = f"{name}/{stem}"
            count = self._crop_counts.get(key, 0)
            self._crop_counts[key] = count + 1
            path = self.out / "crops" / name / (f"{stem}.jpg" if count == 0 else f"{stem}_{count}.jpg")
            crop = np.ascontiguousarray(image[y1:y2, x1:x2])  # (h,w,3)
            save_image(torch.from_numpy(crop).permute(2, 0, 1), path)
            self.written.crops += 1


def _coco_results(rows: np.ndarray, category_ids: list[int] | None) -> list[dict]:
    """(n,7) [image_id, x, y, w, h, score, cls] → COCO results, rounded to keep the file small. `category_ids`: COCO's
    own id of each class (weights trained on a COCO conversion carry them), so that the file scores against the
    original annotations; otherwise the class index."""
    return [
        {
            "image_id": int(r[0]),
            "category_id": category_ids[int(r[6])] if category_ids else int(r[6]),
            "bbox": [round(float(v), 2) for v in r[1:5]],
            "score": round(float(r[5]), 5),
        }
        for r in rows
    ]
