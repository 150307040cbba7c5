"""`yolotr predict --weights W --source IMG|DIR|SHARDS --out DIR`: drawn detections and COCO-results json."""

from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights file (.safetensors or weights-only .pt)")
    parser.add_argument(
        "--source", required=True, help="an image, a folder of images, or shards (split folder, index.json or .tar)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--imgsz", type=int, default=None, help="letterbox size (default: the weights' training size)")
    parser.add_argument("--max-det", type=int, default=300, help="detections per image")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if available)")
    parser.add_argument("--no-images", action="store_true", help="write only the json, not the drawn images")


def run(args: argparse.Namespace) -> int:
    from yolotr.eval.launch import start_process
    from yolotr.eval.predict import PredictSettings, predict

    process = start_process(args.device)
    settings = PredictSettings(
        conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det, imgsz=args.imgsz,
        batch_size=args.batch_size, save_images=not args.no_images,
    )
    summary = predict(args.weights, args.source, args.out, settings, device=process.device)
    print(f"{summary.images} images, {summary.detections} detections -> {summary.predictions_json}")
    return 0
