"""The EMA of a detector whose head is registered under two names (`model.24` and `detect`) averages every tensor once
per update: constant buffers stay equal to the model's, and the average follows the model as YOLOv5's does."""

import pytest
import torch

from yolotr.guard.ema import ModelEMA
from yolotr.model.yolo import DetectionModel


@pytest.mark.parametrize("skipped", [None, torch.tensor(False)], ids=["host-decay", "device-verdict"])
def test_anchors_stay_the_models_and_head_biases_follow_the_model(skipped):
    model = DetectionModel("configs/models/yolov5n.yaml", nc=3)
    ema = ModelEMA(model, decay=0.9999, tau=2000.0)
    for _ in range(50):
        with torch.no_grad():
            model.detect.m[0].bias.add_(0.01)
        ema.update(model, skipped)
    torch.testing.assert_close(ema.module.detect.anchors, model.detect.anchors)  # not ×2/(1 + d)
    # The last update's decay is d ≈ 0.025: the average is close to the model, never beyond it.
    ema_bias, bias = ema.module.detect.m[0].bias, model.detect.m[0].bias
    assert ((ema_bias - bias).abs() <= 0.01 + 1e-6).all()
    assert (ema_bias <= bias + 1e-6).all()
