"""guard.max_norm means the same at every batch size, accumulation and backend: it bounds the norm of the gradient of
the per-image mean loss, while the loss yolotr backpropagates is YOLOv5's (the per-image mean × the images of the
step)."""

import pytest
import torch

from yolotr.engine.optim import build_optimizer, build_param_groups
from yolotr.guard.step import BufferGuard, clip_factor, deepspeed_clip_threshold, guarded_step
from yolotr.model.loss import ComputeLoss
from yolotr.model.yolo import DetectionModel

IMGSZ = 64


def _clip_after_identical_images(batch: int, micro_batches: int = 1, max_norm: float = 1e-3):
    """Per-image gradients made identical (one image and its boxes repeated; BatchNorm sees the same statistics at
    any batch), summed over `batch` images as the trainer's loss does, split into `micro_batches` accumulated
    backward passes. Returns (grad_norm the guard reports, the factor the clip multiplied the gradient by)."""
    torch.manual_seed(0)
    model = DetectionModel("configs/models/yolov5n.yaml", nc=3)
    compute_loss = ComputeLoss(model, imgsz=IMGSZ)
    image = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[0, 0.5, 0.5, 0.4, 0.3], [2, 0.3, 0.7, 0.2, 0.25]])  # (2, 5) class cx cy w h
    per_micro = batch // micro_batches
    for _ in range(micro_batches):
        targets = torch.cat([torch.cat([torch.full((len(boxes), 1), float(i)), boxes], 1) for i in range(per_micro)])
        loss, _ = compute_loss(model(image.expand(per_micro, -1, -1, -1)), targets)  # loss = mean · per_micro
        loss.backward()
    params = list(model.parameters())
    before = torch.cat([p.grad.reshape(-1) for p in params])
    optimizer = build_optimizer(build_param_groups(model, 0.0, 1.0), "sgd", 0.0, 0.9)
    norm, skipped = guarded_step(params, optimizer, max_norm=max_norm, images=batch, force_skip=torch.tensor(False),
                                 buffers=BufferGuard(torch.nn.Identity()), buffers_before=[])
    after = torch.cat([p.grad.reshape(-1) for p in params])
    assert not skipped
    return float(norm), float(after.norm() / before.norm())


def test_identical_per_image_gradients_at_batch_8_and_32_give_the_same_norm_and_clip_coefficient():
    norm_8, factor_8 = _clip_after_identical_images(8)
    norm_32, factor_32 = _clip_after_identical_images(32)
    assert norm_8 == pytest.approx(norm_32, rel=1e-4)
    assert factor_8 == pytest.approx(factor_32, rel=1e-4)
    assert factor_8 < 0.5  # the threshold bit: the comparison is about a clip that acted


def test_accumulating_four_batches_of_8_clips_like_one_batch_of_32():
    norm_one, factor_one = _clip_after_identical_images(32)
    norm_acc, factor_acc = _clip_after_identical_images(32, micro_batches=4)
    assert norm_acc == pytest.approx(norm_one, rel=1e-4)
    assert factor_acc == pytest.approx(factor_one, rel=1e-4)


def test_a_healthy_step_under_the_threshold_is_not_scaled():
    norm, factor = _clip_after_identical_images(32, max_norm=1e6)
    assert factor == pytest.approx(1.0, abs=1e-6)
    assert clip_factor(norm, 1e6) == 1.0


def test_deepspeed_clips_the_summed_gradient_at_max_norm_times_the_images_of_the_step():
    # DeepSpeed holds the summed gradient (the same loss), so its threshold scales with the images it sums: the same
    # per-image bound as the DDP path's at every batch size.
    norm_32, _ = _clip_after_identical_images(32)
    summed_norm = norm_32 * 32
    assert clip_factor(summed_norm, deepspeed_clip_threshold(1e-3, 32)) == pytest.approx(clip_factor(norm_32, 1e-3),
                                                                                          rel=1e-4)
    assert deepspeed_clip_threshold(1.0, 8) * 4 == deepspeed_clip_threshold(1.0, 32)


def test_clip_factor_is_one_without_a_clip_and_for_a_non_finite_norm():
    assert clip_factor(5.0, 0.0) == 1.0
    assert clip_factor(float("nan"), 1.0) == 1.0
    assert clip_factor(4.0, 1.0) == pytest.approx(0.25, rel=1e-5)
