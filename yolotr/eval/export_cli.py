"""`yolotr export --weights W --format onnx [--imgsz N] [--dynamic] [--out FILE]`, checked with onnxruntime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights file (.safetensors or weights-only .pt)")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the weights' training size)")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    parser.add_argument("--out", default=None, help="output file (default: the weights path with .onnx)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's choice for yolotr)")


def run(args: argparse.Namespace) -> int:
    import torch

    from yolotr.checkpoint.weights_file import load_weights
    from yolotr.eval.export import DEFAULT_OPSET, check_parity, export_onnx, onnx_op_counts
    from yolotr.model.transformer import TRANSFORMER_TYPES

    loaded = load_weights(args.weights, device="cpu")
    model = loaded.model
    imgsz = args.imgsz or loaded.imgsz
    stride = int(model.stride.max())
    if imgsz % stride:
        raise SystemExit(f"--imgsz {imgsz} must be a multiple of the model's largest stride {stride}")
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")

    export_onnx(model, out, imgsz, dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET)
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB)")

    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, imgsz, imgsz, generator=generator)]
    if args.dynamic:  # another batch size and a non-square shape, through the same graph
        inputs.append(torch.rand(2, 3, imgsz, imgsz + stride, generator=generator))
    reports = check_parity(model, out, inputs)
    for report in reports:
        print(report.line())

    transformer_blocks = sum(isinstance(m, TRANSFORMER_TYPES) for m in model.modules())
    ops = onnx_op_counts(out)
    attention_ops = ops.get("Softmax", 0) + ops.get("Attention", 0)
    print(
        f"graph: {sum(ops.values())} nodes, {attention_ops} attention softmax ops; "
        f"model: {transformer_blocks} transformer blocks"
    )
    if transformer_blocks and not attention_ops:
        print(f"error: {out} has no attention ops although the model has transformer blocks", file=sys.stderr)
        return 1
    if not all(report.ok for report in reports):
        print(f"error: {out} does not match PyTorch within rel 1e-4; do not deploy it", file=sys.stderr)
        return 1
    return 0
