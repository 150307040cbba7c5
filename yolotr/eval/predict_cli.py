"""`yolotr predict --weights W --source SRC --out DIR`: drawn detections, annotated videos, labels, crops and
COCO-results json for images, folders, globs, .txt lists, videos, webcams, streams or shards."""

from __future__ import annotations

import argparse
import logging

from yolotr import console

log = logging.getLogger(__name__)

MAX_LISTED_UNREADABLE = 10


def _classes(text: str) -> list[int]:
    try:
        return [int(c) for c in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class indices like 0,2,5, got {text!r}") from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="weights: a yolotr .safetensors or .pt, a run folder or checkpoint, or a yolov5 .pt")
    parser.add_argument(
        "--source", required=True,
        help="an image or video, a folder of them, a glob ('imgs/*.jpg', quoted), a .txt list of paths, a webcam "
             "index (0), an rtsp:// or http:// stream, or shards (split folder, index.json or .tar)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default %(default)s)")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold (default %(default)s)")
    parser.add_argument("--imgsz", type=int, default=None, help="letterbox size (default: the weights' training size)")
    parser.add_argument("--max-det", type=int, default=300, help="detections per image (default %(default)s)")
    parser.add_argument("--classes", type=_classes, default=None, metavar="0,2,5",
                        help="keep only these class indices")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images per forward pass (default %(default)s; webcams and streams use 1)")
    parser.add_argument("--vid-stride", type=int, default=1, help="predict every n-th video frame (default 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: GPU if available)")
    parser.add_argument("--no-images", action="store_true", help="write no drawn images or videos")
    parser.add_argument("--save-txt", action="store_true",
                        help="labels/<stem>.txt per image: class cx cy w h conf, normalised (YOLO format)")
    parser.add_argument("--save-crop", action="store_true", help="crops/<class>/<stem>.jpg: each box cut out")
    parser.add_argument("--line-width", type=int, default=None, help="box line width in pixels (default: scaled)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it is off when not a terminal)")


def run(args: argparse.Namespace) -> int:
    from yolotr.eval.launch import start_process
    from yolotr.eval.predict import PredictSettings, predict

    settings = PredictSettings(
        conf_thres=args.conf, iou_thres=args.iou, max_det=args.max_det, imgsz=args.imgsz, classes=args.classes,
        batch_size=args.batch_size, save_images=not args.no_images, save_txt=args.save_txt, save_crop=args.save_crop,
        line_width=args.line_width, vid_stride=args.vid_stride, progress=False if args.no_progress else None,
    )
    with start_process(args.device) as process:
        summary = predict(args.weights, args.source, args.out, settings, device=process.device)
    written = summary.written
    videos = f", {len(written.videos)} video{'s' * (len(written.videos) != 1)}" if written.videos else ""
    console.result(f"{summary.images} images{videos}, {summary.detections} detections -> {summary.predictions_json}"
          + (" (interrupted)" if summary.interrupted else ""))
    console.result(summary.speed_line())
    extras = [f"{written.labels} labels in labels/" if args.save_txt else "",
              f"{written.crops} crops in crops/" if args.save_crop else ""]
    if any(extras):
        console.result("saved " + ", ".join(e for e in extras if e))
    if summary.unreadable:
        lines = [f"skipped {len(summary.unreadable)} unreadable images or frames:"]
        lines += [f"  {reason}" for reason in summary.unreadable[:MAX_LISTED_UNREADABLE]]
        if len(summary.unreadable) > MAX_LISTED_UNREADABLE:
            lines.append(f"  ... and {len(summary.unreadable) - MAX_LISTED_UNREADABLE} more")
        log.warning("\n".join(lines))
    return 0
