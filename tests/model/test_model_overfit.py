"""End to end on CPU: a small yolotr-n learns one batch of synthetic images, and finds the boxes afterwards."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou

from yolotr.model.loss import ComputeLoss
from yolotr.model.nms import non_max_suppression
from yolotr.model.yolo import DetectionModel

IMAGE_SIZE = 128
COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # class 0 red, class 1 blue


def synthetic_batch(batch: int, boxes_per_image: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images with solid coloured rectangles; targets (N, 6) [image, class, cx, cy, w, h] normalised."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((batch, 3, IMAGE_SIZE, IMAGE_SIZE), 0.5)
    targets = []
    for image in range(batch):
        for k in range(boxes_per_image):
            w, h = torch.randint(16, 60, (2,), generator=generator).tolist()
            x0 = int(torch.randint(0, IMAGE_SIZE - w, (1,), generator=generator))
            y0 = int(torch.randint(0, IMAGE_SIZE - h, (1,), generator=generator))
            cls = (image + k) % 2
            images[image, :, y0 : y0 + h, x0 : x0 + w] = COLOURS[cls][:, None, None]
            box = torch.tensor([x0 + w / 2, y0 + h / 2, w, h]) / IMAGE_SIZE  # cx, cy, w, h normalised
            targets.append([image, cls, *box.tolist()])
    return images, torch.tensor(targets)


def test_small_yolotr_n_overfits_one_batch_and_then_detects_its_boxes(tiny_model_cfg):
    torch.manual_seed(0)
    model = DetectionModel(tiny_model_cfg(base="yolotr-n", width=0.125, nc=2))
    images, targets = synthetic_batch(batch=4, boxes_per_image=2, seed=0)
    loss_fn = ComputeLoss(model, imgsz=IMAGE_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

    losses = []
    for _ in range(200):
        loss, _ = loss_fn(model(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    final = sum(losses[-10:]) / 10
    assert final <= 0.2 * losses[0], f"loss fell only from {losses[0]:.3f} to {final:.3f}"

    model.eval()
    with torch.no_grad():
        detections = non_max_suppression(model(images)[0], conf_thres=0.25, iou_thres=0.45)
    for image, found in enumerate(detections):
        truth = targets[targets[:, 0] == image]
        truth_boxes = box_convert(truth[:, 2:] * IMAGE_SIZE, "cxcywh", "xyxy")
        overlaps = box_iou(truth_boxes, found[:, :4]) > 0.5
        for box, hits in enumerate(overlaps):
            assert hits.any(), f"image {image}: true box {box} has no detection at IoU > 0.5"
            # NMS is per class, so a weaker duplicate of the other class may sit on the same box; the detection that
            # counts (for mAP, and for a user) is the most confident one there.
            strongest = found[hits][found[hits, 4].argmax()]
            assert strongest[5] == truth[box, 1], f"image {image}, box {box}: strongest detection {strongest.tolist()}"
