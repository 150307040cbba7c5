"""`yolotr predict`: boxes drawn into the images and COCO-results json that pycocotools accepts."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from yolotr.cli import main


@pytest.fixture
def image_folder(tmp_path):
    """Two noise images of different, non-square sizes."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (height, width) in {"a.png": (50, 80), "b.png": (64, 48)}.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def predict(weights, source, out, *extra):
    return main(["predict", "--weights", str(weights), "--source", str(source), "--out", str(out), "--imgsz", "64",
                 "--conf", "0.2", "--max-det", "5", *extra])


def test_predict_draws_into_every_predicted_box(tiny_weights, image_folder, tmp_path):
    weights, _ = tiny_weights
    out = tmp_path / "out"

    assert predict(weights, image_folder, out) == 0

    results = json.loads((out / "predictions.json").read_text())
    images = {entry["id"]: entry for entry in json.loads((out / "images.json").read_text())}
    assert results, "the confident tiny model should detect something at conf 0.2"
    for det in results:
        name = images[det["image_id"]]["file_name"]
        before, after = np.asarray(Image.open(image_folder / name)), np.asarray(Image.open(out / name))
        x, y, w, h = (int(round(v)) for v in det["bbox"])
        region = (slice(y, y + h + 1), slice(x, x + w + 1))
        assert (before[region] != after[region]).any(), f"no pixel changed inside {det} of {name}"


def test_predictions_json_is_coco_results_that_pycocotools_loads(tiny_weights, image_folder, tmp_path):
    from pycocotools.coco import COCO

    weights, _ = tiny_weights
    out = tmp_path / "out"
    predict(weights, image_folder, out, "--no-images")

    images = json.loads((out / "images.json").read_text())
    results = json.loads((out / "predictions.json").read_text())
    gt = COCO()
    gt.dataset = {"images": images, "annotations": [], "categories": [{"id": k, "name": str(k)} for k in range(3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        loaded = gt.loadRes(str(out / "predictions.json"))

    assert len(loaded.getAnnIds()) == len(results) > 0
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    for det in results:
        assert set(det) == {"image_id", "category_id", "bbox", "score"}
        x, y, w, h = det["bbox"]
        width, height = sizes[det["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width + 0.01 and y + h <= height + 0.01 and w > 0 and h > 0
        assert 0.2 <= det["score"] <= 1 and det["category_id"] in (0, 1, 2)
    assert not list(out.glob("*.png"))  # --no-images


def test_a_single_image_source_and_a_missing_source(tiny_weights, image_folder, tmp_path, capsys):
    weights, _ = tiny_weights

    assert predict(weights, image_folder / "a.png", tmp_path / "one") == 0
    assert (tmp_path / "one" / "a.png").is_file()
    capsys.readouterr()

    assert predict(weights, tmp_path / "nowhere.png", tmp_path / "none") == 2
    assert capsys.readouterr().err == f"yolotr predict: error: --source {tmp_path / 'nowhere.png'} does not exist\n"
    assert not (tmp_path / "none").exists()


def test_predicting_on_val_shards_uses_the_ground_truth_image_ids(tiny_weights, synth_data, tmp_path):
    from yolotr.data.coco_gt import coco_ground_truth
    from yolotr.data.spec import load_data_yaml
    from yolotr.eval.coco_eval import evaluate_detections

    weights, _ = tiny_weights
    spec = load_data_yaml(synth_data)
    out = tmp_path / "out"

    assert predict(weights, synth_data.parent / "val", out) == 0

    images = json.loads((out / "images.json").read_text())
    gt = coco_ground_truth(spec.val, list(spec.names))
    assert [i["id"] for i in images] == [i["id"] for i in gt["images"]]
    assert len(list(out.glob("*.png"))) + len(list(out.glob("*.jpg"))) == len(images)
    result = evaluate_detections(gt, json.loads((out / "predictions.json").read_text()), list(spec.names))
    assert result.n_images == len(images)


def test_predictions_of_a_coco_trained_model_on_coco_file_names_use_coco_ids(tiny_weights, tmp_path):
    # COCO's val images are named by their id, and a COCO conversion records COCO's id of each class
    # (data.yaml → weights): predictions.json then scores against the original annotations, as YOLOv5's does.
    from tests.eval.conftest import TINY_NAMES, tiny_model
    from yolotr.checkpoint.weights_file import save_weights

    model = tiny_model()
    coco_ids = [1, 3, 90][: len(TINY_NAMES)]
    weights = save_weights(tmp_path / "coco.safetensors", model_state=model.state_dict(), ema_state=None,
                           model_yaml=model.yaml, names=TINY_NAMES, imgsz=64, extra={"category_ids": coco_ids})
    folder = tmp_path / "val2017"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for image_id in (37777, 139):
        Image.fromarray(rng.integers(0, 255, (50, 80, 3), dtype=np.uint8)).save(folder / f"{image_id:012d}.jpg")

    assert predict(weights, folder, tmp_path / "coco", "--no-images") == 0
    assert predict(tiny_weights[0], folder, tmp_path / "plain", "--no-images") == 0  # same model, no COCO ids

    results = json.loads((tmp_path / "coco" / "predictions.json").read_text())
    plain = json.loads((tmp_path / "plain" / "predictions.json").read_text())
    images = json.loads((tmp_path / "coco" / "images.json").read_text())
    assert {entry["id"] for entry in images} == {37777, 139}
    assert results and {r["image_id"] for r in results} <= {37777, 139}
    assert [r["category_id"] for r in results] == [coco_ids[r["category_id"]] for r in plain]
