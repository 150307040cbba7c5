"""Validation: every rank predicts its share of the val stream, rank 0 scores all of it with COCOeval,
and every rank returns rank 0's numbers."""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from yolotr.data.boxes import letterbox_to_original, xyxy_to_coco_xywh
from yolotr.distributed import broadcast_from_rank0, gather_to_rank0, rank
from yolotr.eval.coco_eval import EvalResult, evaluate_detections


def network_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 (B,3,H,W) → float (B,3,H,W) in [0,1] on `device`. The uint8 crosses to the device (4x less traffic
    than float); the division runs there."""
    return images.to(device, non_blocking=True).float() / 255


@torch.no_grad()
def decoded_predictions(
    model: torch.nn.Module, x: torch.Tensor, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The eval-mode forward's decoded boxes (B,N,5+nc) in fp32, before NMS."""
    autocast = contextlib.nullcontext() if autocast_dtype is None else torch.autocast(x.device.type, dtype=autocast_dtype)
    with autocast:
        output = model(x)
    decoded = output[0] if isinstance(output, (tuple, list)) else output  # (B,N,5+nc)
    return decoded.float()


def predict_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    *,
    device: torch.device | str,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    multi_label: bool,
    autocast_dtype: torch.dtype | None = None,
    classes: list[int] | None = None,
) -> list[torch.Tensor]:
    """NMS'd detections per image, (n,6) x1,y1,x2,y2,conf,cls in the pixels of `images` (uint8 (B,3,H,W))."""
    from yolotr.model.nms import non_max_suppression

    decoded = decoded_predictions(model, network_input(images, device), autocast_dtype)
    return non_max_suppression(
        decoded, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det, multi_label=multi_label, classes=classes
    )


def detections_to_rows(
    predictions: Sequence[torch.Tensor],
    image_ids: Sequence[int],
    ratio_pads: Sequence[Any],
    orig_sizes: Sequence[tuple[int, int]],
) -> np.ndarray:
    """COCO results as a compact (n,7) array [image_id, x, y, w, h, score, category_id] in original pixels.

    An array rather than dicts because it is what crosses process boundaries (gather_object pickles it).
    """
    rows = []
    for pred, image_id, ratio_pad, orig_size in zip(predictions, image_ids, ratio_pads, orig_sizes):
        pred = pred.detach().float().cpu()
        boxes = xyxy_to_coco_xywh(letterbox_to_original(pred[:, :4], ratio_pad, orig_size))  # (n,4)
        ids = torch.full((len(pred), 1), float(image_id), dtype=torch.float64)  # float64 holds any id exactly
        rows.append(torch.cat([ids, boxes.double(), pred[:, 4:6].double()], dim=1).numpy())  # (n,7)
    return np.concatenate(rows) if rows else np.zeros((0, 7))


def rows_to_coco_results(rows: np.ndarray) -> list[dict[str, Any]]:
    """(n,7) rows → COCO results dicts, ordered by image id.

    The order matters: COCOeval breaks score ties by input order, so sorting (stably, keeping each image's
    NMS order) makes the metrics independent of how the images were split over ranks.
    """
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return [
        {"image_id": int(r[0]), "category_id": int(r[6]), "bbox": [float(v) for v in r[1:5]], "score": float(r[5])}
        for r in rows
    ]


def validate(
    model: torch.nn.Module,
    stream: Iterable,
    gt: dict[str, Any],
    names: list[str],
    *,
    device: torch.device | str,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    autocast_dtype: torch.dtype | None = None,
) -> EvalResult:
    """COCO metrics of `model` on the val stream; collective: every rank calls it and gets the same result.

    The model runs in eval mode (restored afterwards). Predictions use multi-label NMS as YOLOv5's val does.
    """
    was_training = model.training
    model.eval()
    rows, seen = [], []
    try:
        for batch in stream:
            predictions = predict_batch(
                model, batch.images, device=device, conf_thres=conf_thres, iou_thres=iou_thres,
                max_det=max_det, multi_label=True, autocast_dtype=autocast_dtype,
            )
            rows.append(detections_to_rows(predictions, batch.image_ids, batch.ratio_pad, batch.orig_sizes))
            seen.extend(int(i) for i in batch.image_ids)
    finally:
        model.train(was_training)

    share = (np.concatenate(rows) if rows else np.zeros((0, 7)), seen)
    shares = gather_to_rank0(share)
    result, failure = None, None
    if rank() == 0:
        try:
            all_rows = np.concatenate([r for r, _ in shares])
            all_seen = [i for _, ids in shares for i in ids]
            _check_each_image_once(all_seen, gt)
            result = evaluate_detections(gt, rows_to_coco_results(all_rows), names, image_ids=sorted(set(all_seen)))
        except Exception as error:  # noqa: BLE001 - raised on every rank below
            failure = error
    # Rank 0's failure travels too (as text: not every exception pickles), so no rank waits forever.
    result, message = broadcast_from_rank0((result, None if failure is None else f"{type(failure).__name__}: {failure}"))
    if message is not None:
        raise RuntimeError(f"validation failed on rank 0: {message}") from failure
    return result


def _check_each_image_once(seen: list[int], gt: dict[str, Any]) -> None:
    """A duplicated image would count its detections twice; a missing one would silently shrink the set."""
    counts = Counter(seen)
    unique = set(counts)
    if len(unique) != len(seen):
        duplicates = sorted(i for i, n in counts.items() if n > 1)[:10]
        raise RuntimeError(f"validation saw images more than once across ranks: ids {duplicates}")
    missing = {image["id"] for image in gt["images"]} - unique
    if missing:
        warnings.warn(
            f"validation covered {len(unique)} of {len(gt['images'])} images; mAP is over those only", stacklevel=3
        )
