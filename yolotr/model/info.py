"""`yolotr model info`: the layer table, parameter count and GFLOPs of a model yaml (YOLOv5's model summary).

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode` on a batch of 1. It counts 2 FLOPs per
multiply-accumulate for convolutions and matrix products, the convention of YOLOv5's "GFLOPs" (thop's MACs x 2),
and nothing for BatchNorm, activations, pooling or upsampling. So YOLOv5n/s/m come out at 4.5/16.4/48.9 GFLOPs at 640
against YOLOv5's 4.5/16.5/49.0. Attention is counted: the count runs with SDPA's math backend, whose q·kᵀ and attn·v
matrix products the counter sees (PyTorch's fused CPU kernel is not in its table and would count as 0). It runs on
the meta device, so no arithmetic is done.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from yolotr.cfg import find_file
from yolotr.model.transformer import TRANSFORMER_TYPES
from yolotr.model.yolo import DetectionModel, ModelConfigError


def count_flops(model: nn.Module, imgsz: tuple[int, int], in_channels: int = 3) -> int:
    """FLOPs (2 per MAC) of one eval-mode forward pass of a batch of 1 at `imgsz` (height, width)."""
    meta_model = copy.deepcopy(model).to("meta").eval()
    image = torch.zeros(1, in_channels, *imgsz, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        meta_model(image)
    return counter.get_total_flops()


def _as_hw(imgsz: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    height, width = imgsz
    return int(height), int(width)


def model_summary(model: DetectionModel, imgsz: int | tuple[int, int] = 640) -> dict:
    """Parameters, GFLOPs at `imgsz` and the per-layer table of a DetectionModel, as plain JSON-able data."""
    height, width = _as_hw(imgsz)
    stride = model.max_stride
    if height <= 0 or width <= 0 or height % stride or width % stride:
        raise ValueError(f"imgsz must be positive multiples of the model stride {stride}, got {height}x{width}")
    layers = [
        {
            "i": layer.i,
            "from": layer.f,
            "n": layer.n,
            "params": sum(p.numel() for p in layer.parameters()),
            "module": layer.type,
            "args": layer.args,
        }
        for layer in model.model
    ]
    transformer_params = {p for m in model.modules() if isinstance(m, TRANSFORMER_TYPES) for p in m.parameters()}
    return {
        "cfg": model.yaml_file,
        "nc": model.nc,
        "imgsz": [height, width],
        "num_layers": len(layers),
        "params": sum(p.numel() for p in model.parameters()),
        "transformer_params": sum(p.numel() for p in transformer_params),
        "gflops": count_flops(model, (height, width), model.in_channels) / 1e9,
        "layers": layers,
    }


def format_summary(summary: dict) -> str:
    """YOLOv5's layer table followed by a one-line summary."""
    lines = [f"{'':>3}{'from':>18}{'n':>3}{'params':>10}  {'module':<40}{'arguments':<30}"]
    for layer in summary["layers"]:
        lines.append(
            f"{layer['i']:>3}{str(layer['from']):>18}{layer['n']:>3}{layer['params']:10,}  "
            f"{layer['module']:<40}{str(layer['args']):<30}"
        )
    height, width = summary["imgsz"]
    name = summary["cfg"] or "model"
    lines.append(
        f"{name} summary: {summary['num_layers']} layers, {summary['params']:,} parameters "
        f"({summary['transformer_params']:,} in Transformer blocks), {summary['gflops']:.1f} GFLOPs at {height}x{width}"
    )
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the layer table, parameters and GFLOPs of a model yaml."
    parser.add_argument("--cfg", required=True, help="model yaml or preset name, e.g. yolotr-s or configs/models/x.yaml")
    parser.add_argument(
        "--imgsz", type=int, nargs="+", default=[640], metavar="N", help="image size for GFLOPs: N, or H W"
    )
    parser.add_argument("--nc", type=int, default=None, help="number of classes (overrides the yaml's nc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    if len(args.imgsz) > 2:
        print(f"yolotr model info: error: --imgsz takes N or H W, got {args.imgsz}", file=sys.stderr)
        return 2
    try:
        model = DetectionModel(find_file(args.cfg, "models"), nc=args.nc)
        summary = model_summary(model, tuple(args.imgsz * 2)[:2])
    except (ModelConfigError, OSError, ValueError) as error:
        print(f"yolotr model info: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0
