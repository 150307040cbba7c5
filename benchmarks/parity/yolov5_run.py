"""Runs ultralytics/yolov5's own train.py, unmodified, and times it through its callbacks; then its own val.py on the
final weights with --save-json, so that the harness can score the very same predictions with yolotr's evaluator.

Runs under yolov5's interpreter (`YOLOV5_PYTHON`) with yolov5's checkout (`YOLOV5_DIR`) importable; nothing of
yolov5 is copied here. Usage (the harness, parity.py, builds this line):

    python yolov5_run.py --yolov5-dir DIR --result OUT.json -- <train.py arguments>

OUT.json: {"epochs": [{"epoch", "images", "seconds"}], "images_per_s", "results_csv": {"map50", "map", ...},
"nms_time_limit_warnings", "last_pt", "val": {"map50", "map", "predictions"}}.

yolov5's NMS gives up after 0.5 + 0.05 × batch seconds (utils/general.py) and returns what it has so far. On a loaded
CPU, train.py's own final validation (batch 2 × 32) hits that limit and scores truncated detections (seen: mAP50-95
0.045 where the same weights score 0.106). So the figure the harness takes as yolov5's is its val.py on the final
weights at batch 1, whose limit (0.55 s per image) is not reached; results.csv's figures are kept beside it.
`--val-only SAVE_DIR` redoes that validation for a finished run.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer:
    """Callbacks: the time of each epoch's loop (data, forward, backward, optimizer, EMA), validation excluded
    (on_train_epoch_end runs before yolov5 validates), and the images it trained on."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self._start = 0.0
        self._images = 0

    def epoch_start(self, *args, **kwargs) -> None:
        _sync()
        self._start, self._images = time.perf_counter(), 0

    def batch_end(self, model, ni, imgs, *args, **kwargs) -> None:
        self._images += int(imgs.shape[0])

    def epoch_end(self, epoch, *args, **kwargs) -> None:
        _sync()
        self.epochs.append({"epoch": int(epoch), "images": self._images,
                            "seconds": time.perf_counter() - self._start})


class MessageCounter(logging.Handler):
    """Counts the log records that contain `text` (yolov5 logs through the `logging` module)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.count = text, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.text in record.getMessage()


def steady_images_per_s(epochs: list[dict]) -> float:
    """Images per second over every epoch but the first (start-up, cache fill, cudnn autotuning)."""
    steady = epochs[1:] or epochs
    return sum(e["images"] for e in steady) / max(sum(e["seconds"] for e in steady), 1e-9)


def final_metrics(results_csv: Path) -> dict:
    """The last row of yolov5's results.csv (column names are padded with spaces)."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]
    last = rows[-1]
    return {"map50": float(last["metrics/mAP_0.5"]), "map": float(last["metrics/mAP_0.5:0.95"]),
            "precision": float(last["metrics/precision"]), "recall": float(last["metrics/recall"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolov5-dir", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--val-only", type=Path, default=None, help="a finished run's save_dir: validate only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    threads = os.environ.get("OMP_NUM_THREADS")
    yolov5_dir = args.yolov5_dir.resolve()
    args.result = args.result.resolve()
    sys.path.insert(0, str(yolov5_dir))
    os.chdir(yolov5_dir)  # as `python train.py` is run: relative --cfg/--hyp paths resolve in the checkout
    sys.argv = [str(args.yolov5_dir / "train.py"), *train_args]

    import torch

    if threads:  # yolov5 asks for cpu_count - 1 threads; the harness gives both trainers the same
        torch.set_num_threads(int(threads))
    import train  # yolov5's
    import val as yolov5_val  # yolov5's
    from utils import LOGGER
    from utils.callbacks import Callbacks

    nms_warnings = MessageCounter("NMS time limit")
    LOGGER.addHandler(nms_warnings)
    timer = EpochTimer()
    callbacks = Callbacks()
    callbacks.register_action("on_train_epoch_start", "parity_timer", timer.epoch_start)
    callbacks.register_action("on_train_batch_end", "parity_timer", timer.batch_end)
    callbacks.register_action("on_train_epoch_end", "parity_timer", timer.epoch_end)
    opt = train.parse_opt(known=False)
    if args.val_only:
        opt.save_dir = str(args.val_only.resolve())
        result = json.loads(args.result.read_text())
    else:
        train.main(opt, callbacks=callbacks)
        result = {"epochs": timer.epochs, "images_per_s": steady_images_per_s(timer.epochs)}
    save_dir = Path(opt.save_dir)
    last_pt = save_dir / "weights" / "last.pt"
    result.update(results_csv=final_metrics(save_dir / "results.csv"), last_pt=str(last_pt),
                  nms_time_limit_warnings=nms_warnings.count)
    # The final weights (the EMA) through yolov5's val.py at batch 1; predictions saved for the cross-evaluation.
    metrics, _, _ = yolov5_val.run(data=opt.data, weights=str(last_pt), batch_size=1, imgsz=opt.imgsz,
                                   conf_thres=0.001, iou_thres=0.6, device=opt.device, workers=opt.workers,
                                   save_json=True, project=str(save_dir), name="val", exist_ok=True, plots=False)
    result["val"] = {"precision": float(metrics[0]), "recall": float(metrics[1]), "map50": float(metrics[2]),
                     "map": float(metrics[3]), "predictions": str(save_dir / "val" / "last_predictions.json"),
                     "nms_time_limit_warnings": nms_warnings.count - result["nms_time_limit_warnings"]}
    result.update(map50=result["val"]["map50"], map=result["val"]["map"])
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
