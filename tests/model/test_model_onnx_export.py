"""The model exports to ONNX (opset 17) with both Transformer blocks, and onnxruntime reproduces PyTorch."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime
import pytest
import torch

from yolotr.model.yolo import DetectionModel


@pytest.mark.parametrize(
    ("block", "dynamo"),
    # torch.export-based exporter (PyTorch's default) for yolotr's block; the TorchScript exporter for YOLOv5's,
    # whose nn.MultiheadAttention the default exporter only writes correctly from opset 18 (onnxscript's
    # down-conversion to 17 emits an opset-18 Split).
    [("C3TR", True), ("C3TRv5", False)],
)
def test_onnx_export_of_a_non_square_model_matches_pytorch(tmp_path, tiny_model_cfg, block, dynamo):
    torch.manual_seed(0)
    model = DetectionModel(tiny_model_cfg(block=block, nc=4)).eval()
    image = torch.rand(1, 3, 64, 96)
    path = tmp_path / f"{block}.onnx"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, version conversion notes)
        torch.onnx.export(model, (image,), str(path), opset_version=17, dynamo=dynamo, output_names=["pred"])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_pred, *_) = session.run(None, {session.get_inputs()[0].name: image.numpy()})

    with torch.no_grad():
        torch_pred = model(image)[0].numpy()
    np.testing.assert_allclose(onnx_pred, torch_pred, rtol=1e-4, atol=1e-4)
