"""Post-processing: confidence filter, class-aware NMS, max_det, multi-label, class filter."""

from __future__ import annotations

import torch

from yolotr.model.nms import non_max_suppression


def prediction(rows: list[list[float]], nc: int = 3) -> torch.Tensor:
    """(1, N, 5 + nc) from rows [cx, cy, w, h, obj, class scores...]."""
    tensor = torch.tensor(rows, dtype=torch.float32)
    assert tensor.shape[1] == 5 + nc
    return tensor[None]


def test_overlapping_boxes_of_one_class_keep_only_the_most_confident():
    pred = prediction(
        [
            [50, 50, 20, 20, 0.9, 0.9, 0.0, 0.0],
            [51, 50, 20, 20, 0.8, 0.9, 0.0, 0.0],  # IoU ~0.9 with the first
            [150, 50, 20, 20, 0.7, 0.9, 0.0, 0.0],  # far away
        ]
    )

    (out,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)

    assert out.shape == (2, 6)
    assert torch.allclose(out[0], torch.tensor([40, 40, 60, 60, 0.81, 0]))  # xyxy, conf = obj x cls, class
    assert torch.allclose(out[1, :4], torch.tensor([140.0, 40, 160, 60]))


def test_overlapping_boxes_of_different_classes_both_survive_unless_agnostic():
    pred = prediction([[50, 50, 20, 20, 0.9, 0.9, 0.0, 0.0], [51, 50, 20, 20, 0.8, 0.0, 0.9, 0.0]])

    (class_aware,) = non_max_suppression(pred)
    (agnostic,) = non_max_suppression(pred, agnostic=True)

    assert class_aware[:, 5].tolist() == [0.0, 1.0]
    assert agnostic[:, 5].tolist() == [0.0]


def test_confidence_is_objectness_times_class_score_and_is_thresholded():
    pred = prediction([[50, 50, 20, 20, 0.6, 0.5, 0.0, 0.0], [150, 50, 20, 20, 0.2, 1.0, 0.0, 0.0]])

    (out,) = non_max_suppression(pred, conf_thres=0.25)

    assert out.shape == (1, 6)
    assert torch.isclose(out[0, 4], torch.tensor(0.3))


def test_max_det_keeps_the_most_confident_detections():
    rows = [[30.0 * i + 15, 15, 10, 10, 0.3 + 0.01 * i, 1.0, 0.0, 0.0] for i in range(20)]  # disjoint boxes

    (out,) = non_max_suppression(prediction(rows), max_det=5)

    assert out.shape == (5, 6)
    assert torch.allclose(out[:, 4], torch.tensor([0.49, 0.48, 0.47, 0.46, 0.45]))


def test_multi_label_keeps_a_box_once_per_passing_class():
    pred = prediction([[50, 50, 20, 20, 0.9, 0.8, 0.6, 0.1]])

    (single,) = non_max_suppression(pred)
    (multi,) = non_max_suppression(pred, multi_label=True)

    assert single[:, 5].tolist() == [0.0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]


def test_classes_keeps_only_the_listed_classes():
    pred = prediction([[50, 50, 20, 20, 0.9, 0.9, 0.0, 0.0], [150, 50, 20, 20, 0.9, 0.0, 0.0, 0.9]])

    (out,) = non_max_suppression(pred, classes=[2])

    assert out[:, 5].tolist() == [2.0]


def test_each_image_gets_its_own_result_even_when_empty():
    pred = torch.cat((prediction([[50, 50, 20, 20, 0.9, 0.9, 0, 0]]), prediction([[50, 50, 20, 20, 0.01, 0.9, 0, 0]])))

    out = non_max_suppression(pred)

    assert [o.shape for o in out] == [(1, 6), (0, 6)]
