"""Scores a COCO-results predictions file with yolov5's own evaluator (its val.py matching and its ap_per_class).

Runs under yolov5's interpreter with yolov5's checkout importable, like yolov5_run.py. The predictions are
`{"image_id": <file stem>, "category_id": class, "bbox": [x, y, w, h] (original pixels, top-left), "score"}`
rows, the format yolov5's `val.py --save-json` writes; the ground truth is a YOLO folder's labels/val.

    python yolov5_score.py --yolov5-dir DIR --images IMAGES_DIR --labels LABELS_DIR --predictions P.json --out S.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yolov5-dir", required=True, type=Path)
    parser.add_argument("--images", required=True, type=Path)
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.yolov5_dir.resolve()))

    import numpy as np
    import torch
    from PIL import Image
    from utils.metrics import ap_per_class  # yolov5's
    from val import process_batch  # yolov5's

    by_image: dict[str, list[dict]] = defaultdict(list)
    for row in json.loads(args.predictions.read_text()):
        by_image[str(row["image_id"])].append(row)
    iouv = torch.linspace(0.5, 0.95, 10)
    stats = []
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for image in images:
        width, height = Image.open(image).size
        label_file = args.labels / f"{image.stem}.txt"
        empty = not label_file.is_file() or label_file.stat().st_size == 0  # a background image
        rows = np.zeros((0, 5)) if empty else np.loadtxt(label_file, ndmin=2)
        labels = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)  # (n, 5) class cx cy w h, normalised
        cx, cy, w, h = labels[:, 1] * width, labels[:, 2] * height, labels[:, 3] * width, labels[:, 4] * height
        labelsn = torch.stack([labels[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)  # (n, 5) xyxy px
        preds = by_image.get(image.stem, [])
        predn = torch.tensor([[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3],
                               r["score"], r["category_id"]] for r in preds], dtype=torch.float32).reshape(-1, 6)
        if len(predn) == 0:
            if len(labelsn):
                stats.append((torch.zeros(0, 10, dtype=torch.bool), torch.zeros(0), torch.zeros(0), labelsn[:, 0]))
            continue
        correct = process_batch(predn, labelsn, iouv) if len(labelsn) else torch.zeros(len(predn), 10, dtype=torch.bool)
        stats.append((correct, predn[:, 4], predn[:, 5], labelsn[:, 0]))
    stats = [torch.cat(x, 0).numpy() for x in zip(*stats)]
    result = {"precision": 0.0, "recall": 0.0, "map50": 0.0, "map": 0.0, "images": len(images)}
    if len(stats) and stats[0].any():
        _, _, p, r, _, ap, _ = ap_per_class(*stats, names={})
        result.update(precision=float(p.mean()), recall=float(r.mean()), map50=float(ap[:, 0].mean()),
                      map=float(ap.mean(1).mean()))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
