"""Every plot is written as a valid image of the expected kind."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from yolotr.eval.coco_eval import evaluate_detections
from yolotr.eval.plots.labels import plot_labels
from yolotr.eval.plots.mosaics import plot_train_batch, plot_val_predictions
from yolotr.eval.plots.pr_curves import plot_pr_curves
from yolotr.eval.plots.results import plot_results
from yolotr.track.metrics import MetricsWriter

NAMES = ["circle", "square"]


def assert_valid_image(path, image_format: str) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == image_format
        return image.size


def batch(size: int = 64):
    images = torch.full((4, 3, size, size), 30, dtype=torch.uint8)
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.5, 0.5], [1, 1, 0.25, 0.25, 0.3, 0.2], [3, 0, 0.7, 0.6, 0.2, 0.4]])
    return images, targets


def test_results_png_is_drawn_from_a_run_with_skips_rollbacks_and_non_finite_norms(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with MetricsWriter(metrics) as writer:
        for step in range(1, 21):
            skipped = step in (7, 13)
            writer.write("train", step=step, epoch=step // 10, loss=1 / step, box=0.1, obj=0.2, cls=0.3,
                         grad_norm=math.inf if skipped else 1.0 + step, lr=[0.01, 0.001], lr_groups=["cnn", "tr"],
                         skipped_steps=int(step >= 7) + int(step >= 13), rollbacks=int(step >= 13), images_per_s=100.0)
            if skipped:
                writer.write("event", event="skip", step=step)
        writer.write("event", event="rollback", step=13)
        writer.write("val", step=10, epoch=0, map50=0.1, map=0.05, precision=0.2, recall=0.3)
        writer.write("val", step=20, epoch=1, map50=0.2, map=0.1, precision=0.3, recall=0.4)

    out = plot_results(metrics, tmp_path / "results.png")

    width, height = assert_valid_image(out, "PNG")
    assert width > height > 0


def test_results_png_of_a_run_before_its_first_validation(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    with MetricsWriter(metrics) as writer:
        writer.write("train", step=1, loss=1.0, lr=0.01)

    assert_valid_image(plot_results(metrics, tmp_path / "results.png"), "PNG")


def test_pr_curve_png_has_one_curve_per_class_with_ground_truth(tmp_path):
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "annotations": [
            {"image_id": 1, "category_id": 0, "bbox": [5, 5, 20, 20]},
            {"image_id": 1, "category_id": 1, "bbox": [30, 30, 20, 20]},
        ],
        "categories": [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}],
    }
    result = evaluate_detections(gt, [{"image_id": 1, "category_id": 0, "bbox": [5, 5, 20, 20], "score": 0.9}], NAMES)

    out = plot_pr_curves(result, NAMES, tmp_path / "PR_curve.png")
    from_dict = plot_pr_curves(result.to_dict(), NAMES, tmp_path / "PR_curve_from_dict.png")

    assert_valid_image(out, "PNG")
    assert_valid_image(from_dict, "PNG")
    assert set(result.pr_curves) == {"circle", "square"}


def test_train_batch_mosaic_draws_each_label_box(tmp_path):
    images, targets = batch()

    out = plot_train_batch(images, targets, NAMES, tmp_path / "train_batch0.jpg")

    assert assert_valid_image(out, "JPEG") == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2)  # 2x2 grid, 2 px padding
    drawn = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)  # (H,W,3) -> (3,H,W)
    # Image 0's box spans 16..48 px; its left edge (x=16 + 2 px grid padding) is no longer the flat grey.
    assert (drawn[:, 2 + 32, 2 + 16].int() - 30).abs().max() > 50


def test_val_predictions_put_labels_beside_predictions(tmp_path):
    images, targets = batch()
    predictions = [torch.tensor([[10.0, 10.0, 40.0, 40.0, 0.9, 1.0], [0, 0, 5, 5, 0.1, 0]])] + [torch.zeros(0, 6)] * 3

    out = plot_val_predictions(images, predictions, targets, NAMES, tmp_path / "val_pred.jpg")

    width, height = assert_valid_image(out, "JPEG")
    assert width > height  # each tile is two images wide


def test_labels_plot_accepts_stream_targets_and_rejects_unknown_classes(tmp_path):
    _, targets = batch()

    assert_valid_image(plot_labels(targets, NAMES, tmp_path / "labels.jpg"), "JPEG")
    with pytest.raises(ValueError, match="class ids"):
        plot_labels(torch.tensor([[0, 5, 0.5, 0.5, 0.1, 0.1]]), NAMES, tmp_path / "bad.jpg")


def test_plot_cli_redraws_results_and_pr_curve_from_the_run_folder(tmp_path, capsys):
    import json

    from yolotr.cli import main

    with MetricsWriter(tmp_path / "metrics.jsonl") as writer:
        writer.write("train", step=1, loss=1.0, lr=0.01, grad_norm=3.0)
        writer.write("val", step=1, map50=0.5, map=0.25)
    gt = {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20]}],
        "categories": [{"id": 0, "name": "circle"}, {"id": 1, "name": "square"}],
    }
    result = evaluate_detections(gt, [{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9}], NAMES)
    (tmp_path / "val_last.json").write_text(json.dumps(result.to_dict()))

    assert main(["plot", str(tmp_path)]) == 0

    pngs = ["results.png", "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"]
    assert capsys.readouterr().out.split() == [str(tmp_path / png) for png in pngs]
    for png in pngs:
        assert_valid_image(tmp_path / png, "PNG")


def test_plot_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    from yolotr.cli import main

    assert main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"yolotr plot: error: {tmp_path}: no metrics.jsonl; is this a yolotr run folder?\n"


def test_labels_of_a_split_are_every_box_of_its_shards_or_of_an_even_sample_of_them(synth_data):
    from yolotr.data.coco_gt import coco_ground_truth
    from yolotr.data.spec import load_data_yaml
    from yolotr.eval.plots.labels import split_label_rows

    spec = load_data_yaml(synth_data)
    names = list(spec.names)

    rows, read = split_label_rows(spec.val, names, max_images=1000)
    sampled, read_sampled = split_label_rows(spec.val, names, max_images=3)

    assert read == spec.val.num_samples == 9
    assert len(rows) == len(coco_ground_truth(spec.val, names)["annotations"]) > 9  # every box, not a batch's
    assert read_sampled == 3 and 0 < len(sampled) < len(rows)


def test_labels_plot_of_a_whole_split(synth_data, tmp_path):
    from yolotr.data.spec import load_data_yaml

    spec = load_data_yaml(synth_data)

    assert_valid_image(plot_labels(spec.train, list(spec.names), tmp_path / "labels.jpg"), "JPEG")


def test_a_box_label_is_white_text_on_a_band_of_the_box_colour():
    from yolotr.eval.plots.drawing import LABEL_TEXT, class_color, draw_boxes

    image = torch.zeros((3, 80, 160), dtype=torch.uint8)
    drawn = draw_boxes(image, torch.tensor([[10.0, 10.0, 150.0, 70.0]]), torch.tensor([1]), NAMES,
                       scores=torch.tensor([0.87]), width=1)

    band = drawn[:, 14:22, 13:38].permute(1, 2, 0).reshape(-1, 3)  # inside the box, where the label is written
    colour = torch.tensor(class_color(1))
    filled = (band == colour).all(dim=1).float().mean()
    text = (band.int() - colour).abs().sum(dim=1) > 100  # the font is anti-aliased: near-white, not white itself
    assert LABEL_TEXT == (255, 255, 255) and (band[text].min(dim=1).values > 200).all()
    assert filled > 0.3 and text.sum() > 10  # a filled background with the text on it, not text on the black image
    assert (drawn[:, 40, 80] == 0).all()  # the box itself stays unfilled
