"""Anchors fitted to the training boxes before training (YOLOv5's AutoAnchor behaviour)."""

import numpy as np
import torch

from yolotr.model.autoanchor import anchor_fit, check_anchors, training_box_sizes
from yolotr.model.yolo import DetectionModel


def _boxes(rng, count, low, high, aspect=1.0):
    """(count, 2) box sizes in pixels: sides in [low, high), width × aspect."""
    side = rng.uniform(low, high, count)
    return np.stack([side * aspect, side], 1)


def test_anchors_that_fit_the_boxes_are_left_alone():
    model = DetectionModel("configs/models/yolov5n.yaml", nc=3)
    before = model.detect.anchors.clone()
    wh = _boxes(np.random.default_rng(0), 500, 20, 300)  # what YOLOv5's default anchors were made for
    fit, new = check_anchors(model.detect, wh, anchor_t=4.0)
    assert fit.bpr >= 0.98 and new is None
    assert torch.equal(model.detect.anchors, before)


def test_tiny_elongated_boxes_get_new_anchors_that_match_them_smallest_at_stride_8():
    model = DetectionModel("configs/models/yolov5n.yaml", nc=3)
    rng = np.random.default_rng(1)
    wh = np.concatenate([_boxes(rng, 400, 2, 4, aspect=6.0), _boxes(rng, 400, 3, 6, aspect=0.15)])
    fit, new = check_anchors(model.detect, wh, anchor_t=4.0)
    assert fit.bpr < 0.5 and new is not None and new.bpr >= 0.98
    pixels = model.detect.anchors * model.detect.stride.view(-1, 1, 1)  # (nl, na, 2)
    assert anchor_fit(wh, pixels.reshape(-1, 2).numpy(), 4.0).bpr == new.bpr
    areas = pixels.prod(-1)  # (nl, na)
    assert (areas[0].max() <= areas[1].min()) and (areas[1].max() <= areas[2].min())


def test_box_sizes_are_measured_at_the_training_size_and_tiny_boxes_dropped():
    labels = [(np.array([[0, 0, 64, 32], [10, 10, 10.5, 11]]), 640, 480)]  # the second box is < 2 px at 160
    wh = training_box_sizes(labels, 160, seed=0)
    assert wh.shape == (1, 2)
    np.testing.assert_allclose(wh[0] / [16, 8], wh[0, 0] / 16, rtol=1e-9)  # one scale for both sides
    assert 0.9 * 16 <= wh[0, 0] <= 1.1 * 16

