"""COCO metrics: pycocotools' numbers, read out per class, with YOLOv5's fitness on top."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from yolotr.eval.coco_eval import EvalResult, evaluate_detections
from yolotr.track.fitness import fitness

NAMES = ["cat", "dog", "bird"]


def ground_truth(boxes_per_image: dict[int, list[tuple[int, list[float]]]]) -> dict:
    """COCO gt from {image_id: [(class, [x, y, w, h]), ...]} on 100x100 images."""
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in boxes_per_image]
    annotations = [
        {"id": n + 1, "image_id": i, "category_id": c, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
        for n, (i, c, box) in enumerate((i, c, b) for i, anns in boxes_per_image.items() for c, b in anns)
    ]
    categories = [{"id": k, "name": name} for k, name in enumerate(NAMES)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detection(image_id: int, cls: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": cls, "bbox": box, "score": score}


GT = ground_truth({1: [(0, [10, 10, 30, 30]), (1, [50, 50, 40, 20])], 2: [(0, [0, 0, 20, 60]), (2, [60, 10, 30, 30])]})


def test_ground_truth_as_predictions_scores_one_everywhere():
    detections = [detection(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in GT["annotations"]]

    result = evaluate_detections(GT, detections, NAMES)

    assert result.map50 == pytest.approx(1.0)
    assert result.map == pytest.approx(1.0)
    assert result.precision == pytest.approx(1.0)
    assert result.recall == pytest.approx(1.0)
    assert result.per_class_ap == pytest.approx({"cat": 1.0, "dog": 1.0, "bird": 1.0})
    assert result.per_class_instances == {"cat": 2, "dog": 1, "bird": 1}
    assert result.n_images == 2 and result.n_detections == 4


def test_finding_half_the_boxes_gives_the_101_point_interpolated_ap():
    gt = ground_truth({1: [(0, [10, 10, 30, 30])], 2: [(0, [40, 40, 30, 30])]})

    result = evaluate_detections(gt, [detection(1, 0, [10, 10, 30, 30], 0.8)], NAMES)

    # Precision 1 at the 51 recall thresholds 0.00..0.50, 0 above: AP = 51/101.
    assert result.map50 == pytest.approx(51 / 101)
    assert result.per_class_precision["cat"] == pytest.approx(1.0)
    assert result.per_class_recall["cat"] == pytest.approx(0.5)


def test_a_false_positive_ranked_first_halves_the_precision():
    gt = ground_truth({1: [(0, [10, 10, 30, 30])]})
    detections = [detection(1, 0, [60, 60, 30, 30], 0.9), detection(1, 0, [10, 10, 30, 30], 0.8)]

    result = evaluate_detections(gt, detections, NAMES)

    assert result.map50 == pytest.approx(0.5)
    assert result.precision == pytest.approx(0.5)
    assert result.recall == pytest.approx(1.0)


def test_map_over_iou_thresholds_counts_the_thresholds_a_box_passes():
    gt = ground_truth({1: [(0, [0, 0, 100, 100])]})

    # IoU 0.72 passes thresholds 0.50, 0.55, 0.60, 0.65, 0.70 and fails the five above.
    result = evaluate_detections(gt, [detection(1, 0, [0, 0, 100, 72], 0.9)], NAMES)

    assert result.map50 == pytest.approx(1.0)
    assert result.map == pytest.approx(0.5)


def test_per_class_ap_equals_pycocotools_run_on_that_class_alone():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    boxes = {
        i: [(int(rng.integers(3)), [*map(float, rng.uniform(0, 50, 2)), 20.0, 25.0]) for _ in range(4)] for i in range(1, 9)
    }
    gt = ground_truth(boxes)
    detections = []  # jittered boxes, a fifth of them with the wrong class
    for a in gt["annotations"]:
        cls = a["category_id"] if rng.random() > 0.2 else 1
        detections.append(detection(a["image_id"], cls, [v + rng.normal(0, 3) for v in a["bbox"]], float(rng.random())))

    result = evaluate_detections(gt, detections, NAMES)

    for k, name in enumerate(NAMES):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = ground_truth(boxes)
            coco.createIndex()
            evaluator = COCOeval(coco, coco.loadRes([dict(d) for d in detections]), "bbox")
            evaluator.params.catIds = [k]
            evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
        assert result.per_class_ap[name] == pytest.approx(evaluator.stats[0])
        assert result.per_class_ap50[name] == pytest.approx(evaluator.stats[1])
    assert 0 < result.map < 1
    assert result.map == pytest.approx(np.mean(list(result.per_class_ap.values())))


def test_no_detections_scores_zero():
    result = evaluate_detections(GT, [], NAMES)

    assert (result.map50, result.map, result.precision, result.recall) == (0.0, 0.0, 0.0, 0.0)
    assert result.per_class_ap == {"cat": 0.0, "dog": 0.0, "bird": 0.0}


def test_classes_without_ground_truth_have_no_per_class_ap():
    gt = ground_truth({1: [(0, [10, 10, 30, 30])]})

    result = evaluate_detections(gt, [detection(1, 0, [10, 10, 30, 30], 0.9), detection(1, 2, [50, 50, 9, 9], 0.5)], NAMES)

    assert set(result.per_class_ap) == {"cat"}
    assert result.map == pytest.approx(1.0)


def test_image_ids_restrict_the_evaluation_to_those_images():
    detections = [detection(1, 0, [10, 10, 30, 30], 0.9), detection(1, 1, [50, 50, 40, 20], 0.9)]

    only_first = evaluate_detections(GT, detections, NAMES, image_ids=[1])
    both = evaluate_detections(GT, detections, NAMES)

    assert only_first.map == pytest.approx(1.0) and only_first.n_images == 1
    assert both.map < 1.0


def test_detections_for_unknown_images_are_rejected_by_id():
    with pytest.raises(ValueError, match=r"image ids \[99\]"):
        evaluate_detections(GT, [detection(99, 0, [0, 0, 5, 5], 0.5)], NAMES)


def test_detections_with_unknown_classes_are_rejected():
    with pytest.raises(ValueError, match="category ids"):
        evaluate_detections(GT, [detection(1, 7, [0, 0, 5, 5], 0.5)], NAMES)


def test_result_round_trips_through_a_dict_and_summary_has_no_curves():
    result = evaluate_detections(GT, [detection(1, 0, [10, 10, 30, 30], 0.9)], NAMES)

    assert EvalResult.from_dict(result.to_dict()) == result
    assert "pr_curves" not in result.summary() and result.summary()["map50"] == result.map50
    assert len(result.pr_recall) == 101 and len(result.pr_curves["cat"]) == 101


def test_fitness_weights_map50_by_a_tenth_and_map_by_nine_tenths():
    result = EvalResult(map50=0.6, map=0.4)

    assert fitness(result) == pytest.approx(0.06 + 0.36)
    assert fitness({"map50": 0.6, "map": 0.4, "kind": "val"}) == pytest.approx(0.42)
