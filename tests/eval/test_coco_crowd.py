"""COCO crowd regions (`iscrowd: 1`) go from the COCO json through the shards into the ground truth, where real
pycocotools ignores the detections inside them.

The hand-made case: one image, one box A of class 0 and one crowd region C of class 0. The detector's best
detection (0.9) lies inside C, its second (0.8) is on A.
  - C honoured (ignored by COCOeval): A is found first, nothing counts against it: AP50 = 1.0.
  - C dropped (the old converter): the 0.9 detection is a false positive before the true one: AP50 = 0.5.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from yolotr.data.coco_gt import coco_ground_truth
from yolotr.data.convert_dataset import convert
from yolotr.data.index import load_index
from yolotr.eval.coco_eval import evaluate_detections

BOX_A = [10, 10, 20, 20]  # x, y, w, h
CROWD = [60, 10, 60, 60]
DETECTIONS = [
    {"image_id": 0, "category_id": 0, "bbox": [70, 20, 20, 20], "score": 0.9},  # inside the crowd region
    {"image_id": 0, "category_id": 0, "bbox": [10, 10, 20, 20], "score": 0.8},  # on A
]


def ground_truth(*, crowd: bool | None) -> dict:
    """crowd=True: C is a crowd region; False: C is an ordinary box; None: C is not there."""
    annotations = [{"id": 1, "image_id": 0, "category_id": 0, "bbox": BOX_A, "iscrowd": 0}]
    if crowd is not None:
        annotations.append({"id": 2, "image_id": 0, "category_id": 0, "bbox": CROWD, "iscrowd": int(crowd)})
    return {"images": [{"id": 0, "file_name": "a.jpg", "width": 128, "height": 96}], "annotations": annotations,
            "categories": [{"id": 0, "name": "person"}]}


def test_a_detection_inside_a_crowd_region_is_ignored_not_a_false_positive():
    honoured = evaluate_detections(ground_truth(crowd=True), DETECTIONS, ["person"])
    dropped = evaluate_detections(ground_truth(crowd=None), DETECTIONS, ["person"])
    ordinary = evaluate_detections(ground_truth(crowd=False), DETECTIONS, ["person"])

    assert honoured.map50 == pytest.approx(1.0)
    assert dropped.map50 == pytest.approx(0.5)
    assert ordinary.map50 < 0.5  # as an ordinary box C is missed (recall 0.5) and the 0.9 detection is still wrong
    assert honoured.per_class_instances == {"person": 1}  # a crowd region is not an instance to find


def test_crowd_regions_survive_the_coco_converter_and_the_shards(tmp_path):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    Image.fromarray(np.full((96, 128, 3), 90, dtype=np.uint8)).save(root / "val2017" / "a.jpg")
    doc = ground_truth(crowd=True)
    doc["categories"] = [{"id": 1, "name": "person"}]
    for annotation in doc["annotations"]:
        annotation["category_id"] = 1
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(doc))

    report = convert("coco", root, tmp_path / "shards")

    split = load_index(tmp_path / "shards" / "val" / "index.json")
    gt = coco_ground_truth(split, ["person"])
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert [a["bbox"] for a in crowd] == [CROWD] and report.boxes_written == 1
    assert evaluate_detections(gt, DETECTIONS, ["person"]).map50 == pytest.approx(1.0)
