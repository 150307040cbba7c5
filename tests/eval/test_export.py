"""ONNX export: the graph holds the transformer blocks and onnxruntime matches PyTorch (rel 1e-4)."""

from __future__ import annotations

import onnxruntime
import torch

from yolotr.cli import main
from yolotr.export.onnx_export import check_parity, export_onnx, onnx_op_counts


def test_export_cli_writes_onnx_that_matches_pytorch_and_keeps_attention(tiny_weights, tmp_path, capsys):
    weights, _ = tiny_weights
    out = tmp_path / "tiny.onnx"

    code = main(["export", "--weights", str(weights), "--format", "onnx", "--imgsz", "64", "--out", str(out)])

    printed = capsys.readouterr().out
    assert code == 0
    assert "onnxruntime parity OK at input [1, 3, 64, 64]" in printed
    ops = onnx_op_counts(out)
    assert ops["Softmax"] >= 1 and ops["MatMul"] >= 2  # the C3TR attention made it into the graph


def test_dynamic_export_runs_other_batch_sizes_and_shapes(make_tiny_model, tmp_path):
    model = make_tiny_model()
    path = export_onnx(model, tmp_path / "dynamic.onnx", 64, dynamic=True)

    reports = check_parity(model, path, [torch.rand(3, 3, 96, 64), torch.rand(1, 3, 64, 128)])

    assert [r.ok for r in reports] == [True, True]
    assert all(r.max_rel_error < 1e-4 for r in reports)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"images": torch.rand(2, 3, 64, 64).numpy()})
    assert output.shape == (2, 3 * (8 * 8 + 4 * 4), 5 + 3)  # 3 anchors at strides 8 and 16, 5 + nc values


def test_parity_check_reports_a_graph_that_no_longer_matches_the_model(make_tiny_model, tmp_path):
    model = make_tiny_model()
    path = export_onnx(model, tmp_path / "static.onnx", 64)
    with torch.no_grad():
        model.detect.m[0].bias.add_(0.5)  # the PyTorch side drifts from what was exported

    (report,) = check_parity(model, path, [torch.rand(1, 3, 64, 64)])

    assert not report.ok and "MISMATCH" in report.line()
