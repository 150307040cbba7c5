"""YOLOv5's loss: target matching, CIoU, scaling, fp32, and finiteness on the inputs that made YOLOv5 NaN."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from yolotr.config.model import LossHyp
from yolotr.debug.sync_check import no_host_sync
from yolotr.model.loss import ComputeLoss, bbox_iou
from yolotr.model.yolo import DetectionModel

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def model(tiny_model_cfg) -> DetectionModel:
    torch.manual_seed(0)
    return DetectionModel(tiny_model_cfg(nc=3))


def predictions(model: DetectionModel, batch: int = 2, size: tuple[int, int] = (128, 160)) -> list[torch.Tensor]:
    torch.manual_seed(1)
    return model.train()(torch.rand(batch, 3, *size))


def assert_finite_loss_and_grads(model: DetectionModel, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad()
    total, items = ComputeLoss(model, imgsz=128)(predictions(model), targets)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(items).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    return total, items


def test_loss_is_finite_for_a_batch_without_labels(model):
    total, items = assert_finite_loss_and_grads(model, torch.zeros((0, 6)))

    box, obj, cls = items.tolist()
    assert box == 0 and cls == 0 and obj > 0  # only "no object anywhere" is learned


@pytest.mark.parametrize("wh", [(0.0, 0.0), (0.0, 0.2), (0.2, 0.0), (1e-9, 0.3)])
def test_loss_is_finite_for_zero_size_boxes(model, wh):
    targets = torch.tensor([[0, 1, 0.5, 0.5, *wh], [1, 2, 0.3, 0.6, 0.2, 0.25]])

    assert_finite_loss_and_grads(model, targets)


def test_loss_is_finite_for_identical_boxes(model):
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3]] * 3 + [[1, 0, 0.5, 0.5, 0.2, 0.3]])

    assert_finite_loss_and_grads(model, targets)


def test_loss_is_finite_for_boxes_on_the_image_border(model):
    targets = torch.tensor([[0, 1, 1.0, 1.0, 0.1, 0.1], [0, 1, 0.0, 0.0, 0.1, 0.1], [1, 1, 0.5, 0.5, 1.0, 1.0]])

    assert_finite_loss_and_grads(model, targets)


def test_ciou_of_identical_boxes_is_one_with_finite_gradients():
    box = torch.tensor([[3.0, 4.0, 2.0, 1.5]], requires_grad=True)

    ciou = bbox_iou(box, box.detach().clone(), ciou=True)
    ciou.sum().backward()

    assert torch.allclose(ciou, torch.ones(1), atol=1e-5)
    assert torch.isfinite(box.grad).all()


def test_ciou_of_degenerate_boxes_is_finite_with_finite_gradients():
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.0], [1.0, 1.0, 1e-12, 1e-12]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.7], [2.0, 2.0, 0.0, 0.0]])

    ciou = bbox_iou(pred, target, ciou=True)
    ciou.sum().backward()

    assert torch.isfinite(ciou).all() and torch.isfinite(pred.grad).all()


def test_iou_and_ciou_values_on_simple_boxes():
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0]])  # (0, 0)-(2, 2)
    b = torch.tensor([[2.0, 1.0, 2.0, 2.0]])  # (1, 0)-(3, 2): overlap 2, union 6
    far = torch.tensor([[11.0, 1.0, 2.0, 2.0]])

    assert torch.allclose(bbox_iou(a, b), torch.tensor([1 / 3]))
    # same aspect ratio, so CIoU = IoU - centre distance² / enclosing diagonal² = 1/3 - 1 / (3² + 2²)
    assert torch.allclose(bbox_iou(a, b, ciou=True), torch.tensor([1 / 3 - 1 / 13]))
    assert bbox_iou(a, far, ciou=True).item() < 0


def test_loss_is_computed_in_fp32_from_bf16_predictions(model):
    preds = [p.bfloat16() for p in predictions(model)]
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3]])

    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, items = ComputeLoss(model, imgsz=128)(preds, targets)

    assert total.dtype == torch.float32 and items.dtype == torch.float32
    assert total.ndim == 0 and items.shape == (3,)
    reference, _ = ComputeLoss(model, imgsz=128)([p.float() for p in preds], targets)
    assert torch.allclose(total, reference)


def test_total_is_the_sum_of_the_items_times_the_batch_size(model):
    preds = predictions(model, batch=2)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3], [1, 0, 0.3, 0.6, 0.1, 0.1]])

    total, items = ComputeLoss(model)(preds, targets)

    assert torch.allclose(total, items.sum() * 2)
    assert not items.requires_grad


def test_gains_scale_with_image_size_and_class_count_as_in_yolov5(model):
    preds = predictions(model)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3]])
    hyp = LossHyp(box=0.05, obj=1.0, cls=0.5)

    _, at_640 = ComputeLoss(model, hyp, imgsz=640)(preds, targets)
    _, at_320 = ComputeLoss(model, hyp, imgsz=320)(preds, targets)
    loss = ComputeLoss(model, hyp, imgsz=320)

    assert torch.allclose(at_320[1], at_640[1] / 4)  # obj gain × (imgsz/640)²
    assert torch.allclose(at_320[[0, 2]], at_640[[0, 2]])
    assert loss.cls_gain == pytest.approx(0.5 * 3 / 80)  # nc/80 with nc = 3, 3/nl with nl = 3


def test_a_target_matches_its_cell_the_two_nearest_neighbours_and_the_anchors_within_ratio_4(model):
    # 128 x 160 image: the stride-8 level is 16 x 20 cells. Centre at column 10.3, row 5.7 (in cells); box the size
    # of the first stride-8 anchor (10 x 13 px).
    preds = predictions(model, batch=1)
    cx, cy = 10.3 / 20, 5.7 / 16
    targets = torch.tensor([[0, 2, cx, cy, 10 / 160, 13 / 128]])

    matches = ComputeLoss(model).build_targets(preds, targets)
    level = matches[0]
    assert level.valid.shape == (5 * 3 * 1,)  # every (neighbour, anchor, target) keeps a slot: no data-dependent shape
    classes, boxes, image, anchor, row, col = (t[level.valid] for t in level[:6])

    # x: fraction .3 < .5 -> the left neighbour; y: fraction .7 > .5 -> the neighbour below. All 3 anchors within 4x.
    assert sorted(set(zip(row.tolist(), col.tolist(), strict=True))) == [(5, 9), (5, 10), (6, 10)]
    assert sorted(anchor.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (image == 0).all() and (classes == 2).all()
    own_cell = (row == 5) & (col == 10)
    assert torch.allclose(boxes[own_cell][:, :2], torch.tensor([0.3, 0.7]).expand(3, 2), atol=1e-5)
    assert torch.allclose(boxes[:, 2:], torch.tensor([10 / 8, 13 / 8]).expand(9, 2))
    # stride 32: the anchors are 9x to 37x the box, so nothing matches there
    assert not matches[2].valid.any()


def test_targets_with_the_wrong_layout_are_refused(model):
    with pytest.raises(ValueError, match=r"targets must be \(N, 6\)"):
        ComputeLoss(model)(predictions(model), torch.zeros(3, 5))


def test_when_two_targets_claim_the_same_cell_and_anchor_the_later_one_sets_the_objectness_target(model):
    # Two boxes centred in the same cells with sizes that match the same anchors, as YOLOv5's
    # `tobj[b, a, gj, gi] = iou` resolves them on a CPU: the later label's IoU is written last.
    preds = predictions(model, batch=1)
    first = [0, 0, 0.51, 0.52, 0.06, 0.10]
    later = [0, 1, 0.515, 0.525, 0.07, 0.09]
    loss = ComputeLoss(model, imgsz=128)
    both = loss.build_targets(preds, torch.tensor([first, later]))
    alone = loss.build_targets(preds, torch.tensor([later]))
    assert (both[0].valid.view(5, 3, 2)[..., 0] & both[0].valid.view(5, 3, 2)[..., 1]).any()  # they do collide
    # Stand-in IoUs, distinct per candidate and *falling* with the index, so "the larger IoU wins" would differ.
    k = len(both[0].valid)
    iou_both = k - torch.arange(k, dtype=torch.float32)
    tobj = loss._objectness_target(torch.zeros(preds[0].shape[:4]), both[0], iou_both)
    # Every cell that the later box claims holds the IoU of the later box's candidate (odd positions: target 1).
    later_cells = alone[0]
    for image, anchor, row, col in zip(*(t[later_cells.valid] for t in later_cells[2:6]), strict=True):
        candidate = k - int(tobj[image, anchor, row, col])  # flat index (neighbour, anchor, target)
        assert candidate % 2 == 1, (anchor, row, col)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_the_loss_forward_and_backward_never_make_the_host_wait_for_the_gpu(tiny_model_cfg, device):
    # Every shape is known on the host (no boolean-mask compaction), and no constant is copied in per step. On a GPU
    # under torch.cuda.set_sync_debug_mode("error"), bf16 forward as in training; on a CPU under the stand-in.
    device = torch.device(device)
    model = DetectionModel(tiny_model_cfg(nc=3)).to(device).train()
    loss = ComputeLoss(model, imgsz=128)
    images = torch.rand(2, 3, 128, 96, device=device)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3], [1, 2, 0.1, 0.9, 0.05, 0.1], [1, 0, 0.99, 0.5, 0.0, 0.1]],
                           device=device)
    for checked in (False, True):  # the first pass creates what is only created once, as the trainer's first steps
        with no_host_sync(device) if checked else nullcontext():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                preds = model(images)
            total, _ = loss(preds, targets)
            total.backward()
