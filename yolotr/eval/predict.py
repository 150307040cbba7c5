"""`yolotr predict`: detections drawn on each image, plus COCO-results json for all of them."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from yolotr.eval.plots.drawing import draw_boxes, save_image
from yolotr.eval.sources import SourceImage, iter_source
from yolotr.eval.validator import detections_to_rows, predict_batch


@dataclass
class PredictSettings:
    conf_thres: float = 0.25
    """Minimum confidence (objectness × class score) of a kept box."""
    iou_thres: float = 0.45
    """NMS IoU threshold."""
    max_det: int = 300
    """Boxes kept per image."""
    imgsz: int | None = None
    """Letterbox size; default: the size the weights were trained at."""
    batch_size: int = 8
    save_images: bool = True


@dataclass
class PredictSummary:
    images: int
    detections: int
    predictions_json: Path
    images_json: Path


def predict(
    weights: str | os.PathLike, source: str | os.PathLike, out: str | os.PathLike, settings: PredictSettings,
    device: str | torch.device = "cpu",
) -> PredictSummary:
    """Detect on every image of `source`; write drawn images, `predictions.json` and `images.json` to `out`.

    predictions.json is in COCO-results format (image_id, category_id, bbox x,y,w,h in original pixels,
    score); images.json maps each image_id to its file name and size, like a COCO gt's `images`.
    """
    from yolotr.checkpoint.weights_file import load_weights
    from yolotr.data.batch import build_val_images

    loaded = load_weights(weights, device=device)
    model, names = loaded.model, loaded.names
    category_ids = loaded.meta.get("extra", {}).get("category_ids")
    imgsz = settings.imgsz or loaded.imgsz
    stride = int(model.stride.max())
    if imgsz % stride:
        raise ValueError(f"--imgsz {imgsz} must be a multiple of the model's largest stride {stride}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    results, images_meta = [], []
    for chunk in _chunks(iter_source(source), settings.batch_size):
        # The val stream's letterbox, so that predict sees exactly what validation sees.
        images, _, ratio_pad = build_val_images([_as_sample(s) for s in chunk], size=imgsz)  # (B,3,S,S)
        predictions = predict_batch(
            model, images, device=device, conf_thres=settings.conf_thres, iou_thres=settings.iou_thres,
            max_det=settings.max_det, multi_label=False,
        )
        orig_sizes = [s.image.shape[:2] for s in chunk]
        rows = detections_to_rows(predictions, [s.image_id for s in chunk], ratio_pad, orig_sizes)  # (n,7)
        for item in chunk:
            mine = rows[rows[:, 0] == item.image_id]
            results.extend(_coco_results(mine, category_ids))
            height, width = item.image.shape[:2]
            images_meta.append({"id": item.image_id, "file_name": item.name, "width": width, "height": height})
            if settings.save_images:
                _save_drawn(item, mine, names, out)

    predictions_json = out / "predictions.json"
    predictions_json.write_text(json.dumps(results))
    images_json = out / "images.json"
    images_json.write_text(json.dumps(images_meta, indent=1))
    return PredictSummary(len(images_meta), len(results), predictions_json, images_json)


def _chunks(items: Iterable[SourceImage], size: int) -> Iterator[list[SourceImage]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _as_sample(item: SourceImage):
    """A DecodedSample without labels, the form the data stream's letterbox takes."""
    from yolotr.data.decode import DecodedSample
    from yolotr.data.labels import DetectionLabel

    height, width = item.image.shape[:2]
    label = DetectionLabel(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), width, height, item.name)
    return DecodedSample(key=item.name, image=item.image, label=label)


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


def _save_drawn(item: SourceImage, rows: np.ndarray, names: list[str], out: Path) -> None:
    image = torch.from_numpy(np.ascontiguousarray(item.image)).permute(2, 0, 1)  # (H,W,3) -> (3,H,W)
    boxes = box_convert(torch.from_numpy(rows[:, 1:5]).float(), in_fmt="xywh", out_fmt="xyxy")  # (n,4)
    drawn = draw_boxes(image, boxes, torch.from_numpy(rows[:, 6]), names, scores=torch.from_numpy(rows[:, 5]))
    suffix = Path(item.name).suffix.lower()
    name = item.name if suffix in (".jpg", ".jpeg", ".png") else f"{Path(item.name).stem}.jpg"
    save_image(drawn, out / name)
