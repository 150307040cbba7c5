"""`yolotr val --weights W --data DATA [--json] [--out DIR]`: COCO mAP of a weights file on a data yaml's val split.

Prints YOLOv5's table (an `all` row, then one per class). With --out, rank 0 also writes the validation plots (PR,
F1, P and R curves, the confusion matrix with background) and val.json, every number and curve of the result.
Runs as one process or under torchrun (every rank predicts its share; rank 0 prints).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from yolotr import console
from yolotr.errors import UsageError
from yolotr.track.fitness import fitness

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights: a yolotr .safetensors or .pt, a run folder or checkpoint, or a yolov5 .pt")
    parser.add_argument("--data", required=True, help="data yaml (shards or YOLO format) or a COCO json")
    parser.add_argument("--imgsz", type=int, default=None, help="letterbox size (default: the weights' training size)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch per process")
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.6, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=300, help="detections per image")
    parser.add_argument("--workers", type=int, default=0, help="data loading workers per process")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: this rank's GPU, else CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the metrics (rank 0)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the plots (PR_curve, F1/P/R_curve, confusion_matrix) and val.json")


def run(args: argparse.Namespace) -> int:
    from yolotr.eval.launch import start_process

    with start_process(args.device) as process:
        # With --json, stdout carries exactly one JSON object: anything else printed meanwhile goes to stderr.
        to_stderr = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
        with to_stderr:
            result, names = _evaluate(args, process)
        if process.is_main:
            if args.json:
                console.result(json.dumps({**result.summary(), "fitness": fitness(result)}))
            else:
                console.result(format_table(result, names))
            if args.out is not None:
                from yolotr.eval.plots.run import plot_validation

                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "val.json").write_text(json.dumps(result.to_dict()))
                written = plot_validation(result, args.out)
                log.info(f"wrote {args.out / 'val.json'} and {', '.join(p.name for p in written)}")
    return 0


def _evaluate(args: argparse.Namespace, process):
    from yolotr.checkpoint.weights_file import load_weights
    from yolotr.data.coco_gt import coco_ground_truth
    from yolotr.data.dataset_cache import resolve_data
    from yolotr.data.spec import load_data_yaml
    from yolotr.data.stream import ValStream
    from yolotr.eval.validator import validate

    loaded = load_weights(args.weights, device=process.device)
    spec = load_data_yaml(resolve_data(args.data), splits=("val",))
    names = list(spec.names)
    if len(names) != len(loaded.names):
        raise UsageError(f"{args.weights} predicts {len(loaded.names)} classes but {args.data} has {len(names)}")
    if names != loaded.names:
        log.warning(f"class names differ between {args.weights} and {args.data}; using the data's")
    imgsz = args.imgsz or loaded.imgsz
    stream = ValStream(
        spec.val, rank=process.rank, world_size=process.world_size, batch_size=args.batch_size, imgsz=imgsz,
        num_workers=args.workers,
    )
    gt = coco_ground_truth(spec.val, names)
    result = validate(
        loaded.model, stream, gt, names, device=process.device, conf_thres=args.conf, iou_thres=args.iou,
        max_det=args.max_det,
    )
    return result, names


def format_table(result, names: list[str]) -> str:
    """YOLOv5's val table: one `all` row, then a row per class that has ground truth."""
    header = f"{'Class':>20}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    instances = sum(result.per_class_instances.values())
    rows = [header, _row("all", result.n_images, instances, result.precision, result.recall, result.map50, result.map)]
    for name in names:
        if name in result.per_class_ap:
            rows.append(_row(
                name, result.n_images, result.per_class_instances.get(name, 0), result.per_class_precision[name],
                result.per_class_recall[name], result.per_class_ap50[name], result.per_class_ap[name],
            ))
    return "\n".join(rows)


def _row(name: str, images: int, instances: int, p: float, r: float, map50: float, map5095: float) -> str:
    return f"{name:>20}{images:>11}{instances:>11}{p:>11.3g}{r:>11.3g}{map50:>11.3g}{map5095:>11.3g}"
