"""Images in, `Results` out, one batch at a time: what `YOLO.predict` runs. Nothing is read ahead of the batch being
predicted, so a video or a large folder streams through in constant memory.

The letterbox is the val stream's (as `yolotr predict` uses), so the API sees what validation sees; boxes are mapped
back to each image's own pixels, whatever its size and aspect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np
import torch

from yolotr.data.boxes import letterbox_to_original
from yolotr.eval.predict import StageTimes
from yolotr.eval.results import Results
from yolotr.eval.validator import decoded_predictions, network_input
from yolotr.model.nms import non_max_suppression

# ultralytics' names for the stages of `Results.speed`.
STAGES = ("preprocess", "inference", "postprocess")


def predict_results(model: torch.nn.Module, images: Iterable[tuple[str, np.ndarray]], names: dict[int, str], *,
                    imgsz: int, batch_size: int, device: torch.device, conf_thres: float, iou_thres: float,
                    max_det: int) -> Iterator[Results]:
    """A `Results` per (path, (H, W, 3) uint8 RGB) of `images`, in order; `speed` is the batch's time per image."""
    model.to(device)
    iterator = iter(images)
    while chunk := list(islice(iterator, batch_size)):
        times = StageTimes(device)
        with times.stage("preprocess"):
            images_in, ratio_pads = _letterboxed([image for _, image in chunk], imgsz)  # (B,3,S,S) uint8
            x = network_input(images_in, device)
        with times.stage("inference"):
            decoded = decoded_predictions(model, x)  # (B,N,5+nc)
        with times.stage("postprocess"):
            found = non_max_suppression(decoded, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det,
                                        multi_label=False)
            boxes = []
            for (_, image), rows, ratio_pad in zip(chunk, found, ratio_pads):
                rows = rows.detach().float().cpu()  # (n,6) x1 y1 x2 y2 conf cls, letterboxed pixels
                rows[:, :4] = letterbox_to_original(rows[:, :4], ratio_pad, image.shape[:2])  # original pixels
                boxes.append(rows)
        speed = {stage: times.per_image_ms(len(chunk)).get(stage, 0.0) for stage in STAGES}
        for (path, image), rows in zip(chunk, boxes):
            yield Results(np.ascontiguousarray(image[..., ::-1]), path, names, rows, speed)  # RGB -> BGR


def _letterboxed(images: list[np.ndarray], imgsz: int) -> tuple[torch.Tensor, list]:
    from yolotr.data.batch import build_val_images
    from yolotr.data.decode import DecodedSample
    from yolotr.data.labels import DetectionLabel

    samples = []
    for position, image in enumerate(images):
        height, width = image.shape[:2]
        empty = DetectionLabel(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), width, height, f"image{position}")
        samples.append(DecodedSample(key=f"image{position}", image=image, label=empty))
    letterboxed, _, ratio_pads = build_val_images(samples, size=imgsz)
    return letterboxed, ratio_pads
