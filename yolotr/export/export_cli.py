"""`yolotr export --weights W [--format onnx,torchscript,openvino,engine] [--nms] [--half] [--dynamic] [--out PATH]`

Each format is written, run on the same seeded images as the PyTorch model, checked against it within a stated
tolerance, and timed; a table of sizes, latencies and differences ends the output. Exit 1 when a format does not
match PyTorch, or when an ONNX graph lost the attention of the model's transformer blocks.
"""

from __future__ import annotations

import argparse
import logging

from yolotr import console

log = logging.getLogger(__name__)

FORMAT_CHOICES = ("onnx", "torchscript", "openvino", "engine")


def _formats(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMAT_CHOICES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown format {','.join(unknown) or text!r} (choose from "
                                         f"{', '.join(FORMAT_CHOICES)}, comma-separated)")
    return chosen


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[1].replace("\n", " ")
    parser.add_argument("--weights", required=True, help="weights: a yolotr .safetensors or .pt, a run folder or checkpoint, or a yolov5 .pt")
    parser.add_argument("--format", type=_formats, default=("onnx",), metavar="onnx[,torchscript,openvino,engine]",
                        help="formats to write (default onnx); engine is TensorRT (a CUDA GPU and its wheel)")
    parser.add_argument("--imgsz", type=int, default=None, help="input size (default: the weights' training size)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of a fixed graph, and the one timed")
    parser.add_argument("--dynamic", action="store_true", help="symbolic batch, height and width")
    parser.add_argument("--half", action="store_true",
                        help="fp16 for GPU targets (ONNX and TorchScript in fp16, TensorRT fp16 kernels)")
    parser.add_argument("--nms", action="store_true",
                        help="end the graph in ONNX NonMaxSuppression: outputs detections (B,max_det,6) "
                             "[x1,y1,x2,y2,conf,class] and num_detections (B,)")
    parser.add_argument("--conf", type=float, default=0.25, help="with --nms: confidence threshold (default 0.25)")
    parser.add_argument("--iou", type=float, default=0.45, help="with --nms: IoU threshold (default 0.45)")
    parser.add_argument("--max-det", type=int, default=300, help="with --nms: detections per image (default 300)")
    parser.add_argument("--device", default="cpu", help="where TorchScript, TensorRT (cuda) and the timings run")
    parser.add_argument("--out", default=None,
                        help="output folder, or the file name when one format is asked for (default: next to the "
                             "weights, e.g. best.onnx, best_openvino_model/)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's choice for yolotr)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per format (median reported; 0: no timing)")


def run(args: argparse.Namespace) -> int:
    from yolotr.export.onnx_export import DEFAULT_OPSET, onnx_op_counts
    from yolotr.export.nms import NmsSettings
    from yolotr.export.exporter import ExportSettings, export

    settings = ExportSettings(
        formats=args.format, imgsz=args.imgsz, batch=args.batch, dynamic=args.dynamic, half=args.half,
        nms=NmsSettings(args.conf, args.iou, args.max_det) if args.nms else None,
        opset=args.opset or DEFAULT_OPSET, device=args.device, latency_runs=args.runs,
    )
    report = export(args.weights, settings, out=args.out)
    for row in report.rows[1:]:
        console.result(f"exported {row.path} ({row.size_mb:.1f} MB)")
        for parity in row.parity:
            console.result(f"  {parity.line()}")
    status = 0
    onnx_rows = [row for row in report.rows if row.format == "onnx"]
    if onnx_rows:
        blocks = report.transformer_blocks
        ops = onnx_op_counts(onnx_rows[0].path)
        attention = ops.get("Softmax", 0) + ops.get("Attention", 0)
        console.result(f"graph: {sum(ops.values())} nodes, {attention} attention softmax ops, "
              f"{ops.get('NonMaxSuppression', 0)} NonMaxSuppression; model: {blocks} transformer blocks")
        if blocks and not attention:
            log.error(f"{onnx_rows[0].path} has no attention ops although the model has transformer blocks")
            status = 1
    if any(parity.detections == 0 for row in report.rows for parity in row.parity):
        log.warning(f"the check images (seeded noise) give no detections at --conf {args.conf}: the NMS graph was "
                    "compared on empty outputs only")
    console.result()
    console.result(report.table())
    for row in report.rows:
        if not row.ok:
            log.error(f"{row.path} does not match PyTorch within {row.tolerance.describe()}; do not deploy it")
            status = 1
    return status
