"""`yolotr model info --cfg YAML [--imgsz N | H W] [--nc K] [--json]`: the layer table, parameters and GFLOPs."""

from __future__ import annotations

import argparse
import json

from yolotr import console
from yolotr.errors import UsageError


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Print the layer table, parameters and GFLOPs of a model yaml."
    parser.add_argument("--cfg", required=True, help="model yaml or preset name, e.g. yolotr-s or configs/models/x.yaml")
    parser.add_argument(
        "--imgsz", type=int, nargs="+", default=[640], metavar="N", help="image size for GFLOPs: N, or H W"
    )
    parser.add_argument("--nc", type=int, default=None, help="number of classes (overrides the yaml's nc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    from yolotr.config.presets import find_file
    from yolotr.model.info import format_summary, model_summary
    from yolotr.model.yolo import DetectionModel

    if len(args.imgsz) > 2:
        raise UsageError(f"--imgsz takes N or H W, got {args.imgsz}")
    try:
        model = DetectionModel(find_file(args.cfg, "models"), nc=args.nc)
        summary = model_summary(model, tuple(args.imgsz * 2)[:2])
    except (OSError, ValueError) as error:  # a ModelConfigError is a UsageError already
        if isinstance(error, UsageError):
            raise
        raise UsageError(str(error)) from error
    console.result(json.dumps(summary) if args.json else format_summary(summary))
    return 0
