"""The same predictions through both evaluators: yolotr's (pycocotools COCOeval) and yolov5's (its val.py matching
and ap_per_class, run under yolov5's interpreter by yolov5_score.py).

Predictions travel as a COCO-results json keyed by image file stem (= the shard sample key), the format yolov5's
`val.py --save-json` writes; `yolotr_predictions` writes yolotr's in the same format.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from yolotr.checkpoint.weights_file import load_weights
from yolotr.data.coco_gt import coco_ground_truth
from yolotr.data.spec import DataSpec
from yolotr.data.stream import ValStream
from yolotr.eval.coco_eval import evaluate_detections
from yolotr.eval.validator import detections_to_rows, predict_batch

# yolotr's val settings (ValConfig defaults), the same as yolov5's val.py
CONF, IOU, MAX_DET = 0.001, 0.6, 300


def yolotr_predictions(weights: Path, spec: DataSpec, imgsz: int, out: Path, device: str) -> Path:
    """Predictions of a yolotr weights file (its EMA) on the val split, as yolotr's validation makes them."""
    loaded = load_weights(weights, device=device)
    stream = ValStream(spec.val, rank=0, world_size=1, batch_size=32, imgsz=imgsz)
    keys = spec.val.keys
    rows = []
    for batch in stream:
        preds = predict_batch(loaded.model, batch.images, device=device, conf_thres=CONF, iou_thres=IOU,
                              max_det=MAX_DET, multi_label=True)
        rows.append(detections_to_rows(preds, batch.image_ids, batch.ratio_pad, batch.orig_sizes))
    table = np.concatenate(rows) if rows else np.zeros((0, 7))  # (n, 7) [image_id, x, y, w, h, score, class]
    results = [{"image_id": keys[int(r[0])], "category_id": int(r[6]), "bbox": [float(v) for v in r[1:5]],
                "score": float(r[5])} for r in table]
    out.write_text(json.dumps(results))
    return out


def pycocotools_score(predictions: Path, spec: DataSpec) -> dict:
    """yolotr's evaluator on a predictions file keyed by file stem."""
    position = {key: i for i, key in enumerate(spec.val.keys)}
    rows = json.loads(predictions.read_text())
    results = [{**r, "image_id": position[str(r["image_id"])]} for r in rows]
    # COCOeval breaks score ties by input order: sort by image as yolotr's validator does.
    results.sort(key=lambda r: r["image_id"])
    gt = coco_ground_truth(spec.val, list(spec.names))
    result = evaluate_detections(gt, results, list(spec.names), image_ids=list(range(len(spec.val.keys))))
    return {"map50": result.map50, "map": result.map, "precision": result.precision, "recall": result.recall}


def yolov5_score(predictions: Path, yolo_root: Path, *, python: str, yolov5_dir: Path, out: Path) -> dict:
    """yolov5's evaluator on a predictions file keyed by file stem (runs yolov5_score.py under yolov5's python)."""
    script = Path(__file__).with_name("yolov5_score.py")
    cmd = [python, str(script), "--yolov5-dir", str(yolov5_dir), "--images", str(yolo_root / "images" / "val"),
           "--labels", str(yolo_root / "labels" / "val"), "--predictions", str(predictions), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"yolov5_score.py failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def torch_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
