"""What validation shows beside mAP: the confusion matrix with background, precision / recall / F1 against the
confidence threshold, and the plots `yolotr val --out` writes; hand-made cases whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from yolotr.cli import main
from yolotr.eval.coco_eval import evaluate_detections
from yolotr.eval.confusion import confusion_matrix

NAMES = ["cat", "dog"]


def gt_of(*boxes: tuple[int, list[float], int]) -> dict:
    """(category, xywh, iscrowd) boxes, all on image 0."""
    return {"images": [{"id": 0, "width": 200, "height": 200}],
            "annotations": [{"id": i + 1, "image_id": 0, "category_id": c, "bbox": b, "iscrowd": crowd}
                            for i, (c, b, crowd) in enumerate(boxes)],
            "categories": [{"id": i, "name": n} for i, n in enumerate(NAMES)]}


def det(category: int, bbox: list[float], score: float) -> dict:
    return {"image_id": 0, "category_id": category, "bbox": bbox, "score": score}


def test_the_confusion_matrix_counts_matches_misclassifications_misses_and_background():
    gt = gt_of((0, [0, 0, 20, 20], 0), (0, [50, 50, 20, 20], 0), (1, [100, 100, 20, 20], 0),
               (1, [150, 0, 40, 40], 1))  # the last one a crowd region
    detections = [
        det(0, [0, 0, 20, 20], 0.9),  # cat found as cat
        det(1, [50, 50, 20, 20], 0.8),  # cat called dog
        det(1, [0, 150, 20, 20], 0.7),  # a dog where there is nothing: background
        det(0, [155, 5, 20, 20], 0.7),  # inside the crowd region: not counted against the detector
        det(1, [100, 100, 20, 20], 0.2),  # the dog, found below the 0.25 threshold: a miss
    ]

    matrix = confusion_matrix(gt, detections, nc=2)

    # rows predicted (cat, dog, background), columns true (cat, dog, background)
    assert matrix.tolist() == [[1, 0, 0],
                               [1, 0, 1],
                               [0, 1, 0]]


def test_precision_recall_and_f1_against_confidence_follow_the_ranked_detections():
    gt = gt_of((0, [0, 0, 20, 20], 0), (0, [50, 50, 20, 20], 0))
    detections = [det(0, [0, 0, 20, 20], 0.9), det(0, [120, 120, 20, 20], 0.6), det(0, [50, 50, 20, 20], 0.3)]

    result = evaluate_detections(gt, detections, NAMES)

    axis = np.asarray(result.conf_axis)
    at = {c: int(np.argmin(np.abs(axis - c))) for c in (0.2, 0.5, 0.95)}
    p, r, f1 = (np.asarray(curves["cat"]) for curves in (result.p_curves, result.r_curves, result.f1_curves))
    assert (p[at[0.95]], r[at[0.95]]) == (1.0, 0.0)  # nothing kept: precision drawn at 1, as YOLOv5 does
    assert (p[at[0.5]], r[at[0.5]]) == (0.5, 0.5)  # 0.9 right, 0.6 wrong
    assert p[at[0.2]] == pytest.approx(2 / 3) and r[at[0.2]] == 1.0
    assert f1[at[0.2]] == pytest.approx(0.8)
    assert set(result.p_curves) == {"cat"}  # dog has no ground truth
    assert "p_curves" not in result.summary() and "confusion" not in result.summary()


def test_val_out_writes_every_validation_plot_and_the_full_result(tiny_weights, synth_data, tmp_path, capsys):
    weights, _ = tiny_weights

    code = main(["val", "--weights", str(weights), "--data", str(synth_data), "--imgsz", "64", "--out",
                 str(tmp_path / "val"), "--device", "cpu"])

    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert table[1].split()[0] == "all" and len(table) >= 3  # then one row per class with ground truth
    for png in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        with Image.open(tmp_path / "val" / png) as image:
            assert image.format == "PNG" and image.size[0] > 300
    saved = json.loads((tmp_path / "val" / "val.json").read_text())
    assert len(saved["confusion"]) == len(saved["names"]) + 1 and saved["f1_curves"]


def test_val_on_a_data_yaml_whose_split_folder_is_missing_is_one_line(tiny_weights, tmp_path, capsys):
    weights, _ = tiny_weights
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: train\nval: val\nnames: [circle, square, triangle]\n")
    (tmp_path / "train").mkdir()

    code = main(["val", "--weights", str(weights), "--data", str(data), "--device", "cpu"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("yolotr val: error: ") and "val" in err and len(err.strip().splitlines()) == 1
