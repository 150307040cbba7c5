"""`yolotr data shard`: YOLO-txt and COCO datasets written by the tests become shards holding the original image
bytes and pixel boxes; invalid samples are excluded and reported with their reason; the same input gives the same
bytes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolotr.cli import main
from yolotr.data.convert_dataset import convert
from yolotr.data.decode import decode_sample
from yolotr.data.errors import DataSpecError
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml


def write_image(path: Path, width: int, height: int, fmt: str = ".jpg") -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    image[: height // 2, : width // 2] = (200, 40, 40)
    data = cv2.imencode(fmt, image)[1].tobytes()
    path.write_bytes(data)
    return data


def read_split(split):
    """{key: (image bytes, label)} of every sample, read back through the index."""
    reader = ShardReader(split)
    samples = {}
    for global_id, key in enumerate(split.keys):
        members = reader.read(global_id)
        sample = decode_sample(key, members, nc=split.nc)
        image_ext = "jpg" if "jpg" in members else "png"
        samples[key] = (bytes(members[image_ext]), sample.label)
    reader.close()
    return samples


@pytest.fixture
def yolo_dataset(tmp_path) -> Path:
    """A YOLOv5 dataset: images/{train,val}, labels/{train,val}, data.yaml with a {index: name} names mapping."""
    root = tmp_path / "yolo"
    train, val = root / "images" / "train", root / "images" / "val"
    write_image(train / "a.jpg", 64, 48)
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.9 0.5 0.4 0.2\n")  # 2nd box leaves the image
    write_image(train / "b.png", 40, 40, ".png")
    (root / "labels/train/b.txt").write_text("1 0.5 0.5 0.5 0.5\n\n")
    write_image(train / "background.jpg", 32, 32)  # no label file: a background image
    write_image(train / "poly.jpg", 50, 50)
    (root / "labels/train/poly.txt").write_text("0 0.1 0.1 0.5 0.2 0.3 0.6\n")  # a polygon row
    write_image(train / "bad_class.jpg", 32, 32)
    (root / "labels/train/bad_class.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    write_image(train / "nan.jpg", 32, 32)
    (root / "labels/train/nan.txt").write_text("0 nan 0.5 0.2 0.2\n")
    write_image(train / "short_row.jpg", 32, 32)
    (root / "labels/train/short_row.txt").write_text("0 0.5 0.5\n")
    (train / "broken.jpg").write_bytes(write_image(tmp_path / "x.jpg", 32, 32)[:200])  # truncated JPEG
    (train / "picture.bmp").write_bytes(b"BM" + bytes(100))  # a BMP header and no image
    write_image(val / "v.jpg", 48, 64)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/val/v.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(yaml.safe_dump({
        "path": ".", "train": "images/train", "val": "images/val", "names": {0: "cat", 1: "dog"}}))
    return root


def test_yolo_dataset_becomes_shards_with_pixel_boxes_and_original_bytes(yolo_dataset, tmp_path):
    out = tmp_path / "shards"

    report = convert("yolo", yolo_dataset / "data.yaml", out, samples_per_shard=2)

    spec = load_data_yaml(out / "data.yaml")
    assert spec.names == ["cat", "dog"] and spec.nc == 2
    train = read_split(spec.train)
    assert sorted(train) == ["images_train_a", "images_train_b", "images_train_background", "images_train_poly"]
    image, label = train["images_train_a"]
    assert image == (yolo_dataset / "images/train/a.jpg").read_bytes()  # no re-encoding
    np.testing.assert_allclose(label.boxes, [[24, 12, 40, 36], [44.8, 19.2, 64, 28.8]], atol=1e-3)
    assert label.classes.tolist() == [0, 1] and (label.width, label.height) == (64, 48)
    assert train["images_train_b"][0][:4] == b"\x89PNG"
    assert len(train["images_train_background"][1].classes) == 0
    np.testing.assert_allclose(train["images_train_poly"][1].boxes, [[5, 5, 25, 30]], atol=1e-3)
    assert len(spec.train.shards) == 2 and report.boxes_clipped == 1
    assert len(read_split(spec.val)) == 1


def test_invalid_yolo_samples_are_excluded_and_reported_with_their_reason(yolo_dataset, tmp_path):
    out = tmp_path / "shards"

    convert("yolo", yolo_dataset / "data.yaml", out)

    excluded = {Path(e["source"]).name: e["reason"] for e in json.loads((out / "report.json").read_text())["excluded"]}
    assert excluded == {"bad_class.jpg": "class_out_of_range", "nan.jpg": "nonfinite_box",
                        "short_row.jpg": "malformed_label_row", "broken.jpg": "invalid_image",
                        "picture.bmp": "invalid_image"}


def test_every_image_type_pil_decodes_is_stored_as_lossless_png_of_its_pixels(tmp_path):
    root = tmp_path / "yolo"
    written = {}
    for name, fmt in (("bitmap.bmp", ".bmp"), ("scan.tif", ".tiff"), ("photo.webp", ".webp")):
        write_image(root / "images/train" / name, 40, 30, fmt)
        written[Path(name).stem] = cv2.cvtColor(cv2.imread(str(root / "images/train" / name)), cv2.COLOR_BGR2RGB)
        (root / "labels/train").mkdir(parents=True, exist_ok=True)
        (root / "labels/train" / f"{Path(name).stem}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "images/train/notes.tiff").write_bytes(b"not an image at all")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                    "names": ["thing"]}))
    report = convert("yolo", root / "data.yaml", tmp_path / "out")

    assert report.reencoded == 6  # three images, in train and in val
    assert [(Path(e.source).name, e.reason) for e in report.excluded if e.split == "train"] == [
        ("notes.tiff", "unsupported_image_format")]
    spec = load_data_yaml(tmp_path / "out/data.yaml")
    reader = ShardReader(spec.train)
    for global_id, key in enumerate(spec.train.keys):
        members = reader.read(global_id)
        sample = decode_sample(key, members, nc=1)
        assert bytes(members["png"][:4]) == b"\x89PNG"
        np.testing.assert_array_equal(sample.image, written[key.rsplit("_", 1)[-1]])  # lossless: the same pixels
    reader.close()


def test_a_label_file_without_its_image_is_reported(yolo_dataset, tmp_path):
    (yolo_dataset / "labels/train/deleted_image.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = convert("yolo", yolo_dataset / "data.yaml", tmp_path / "out")
    orphans = [e for e in report.excluded if e.reason == "label_without_image"]
    assert [(e.split, Path(e.source).name) for e in orphans] == [("train", "deleted_image.txt")]


def test_the_same_input_gives_byte_identical_shards_and_index(yolo_dataset, tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"

    convert("yolo", yolo_dataset / "data.yaml", first, samples_per_shard=3)
    convert("yolo", yolo_dataset / "data.yaml", second, samples_per_shard=3)

    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert [f.name for f in files].count("shard-000000.tar") == 2
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_shard_bytes_limit_starts_new_shards(yolo_dataset, tmp_path):
    convert("yolo", yolo_dataset / "data.yaml", tmp_path / "out", shard_bytes=600)

    assert len(load_data_yaml(tmp_path / "out/data.yaml").train.shards) >= 3


@pytest.fixture
def coco_dataset(tmp_path) -> Path:
    """COCO layout: annotations/instances_{train,val}2017.json, images in train2017/ and val2017/."""
    root = tmp_path / "coco"
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    for split, names in (("train2017", ["x1.jpg", "x2.jpg", "sized_wrong.jpg", "gone.jpg"]), ("val2017", ["y.jpg"])):
        images, annotations = [], []
        for i, name in enumerate(names):
            if name != "gone.jpg":
                write_image(root / split / name, 60, 40)
            images.append({"id": 100 + i, "file_name": name, "width": 61 if name == "sized_wrong.jpg" else 60,
                           "height": 40})
            annotations.append({"id": 2 * i, "image_id": 100 + i, "category_id": 7, "bbox": [10, 5, 20, 10],
                                "iscrowd": 0})
            annotations.append({"id": 2 * i + 1, "image_id": 100 + i, "category_id": 3, "bbox": [50, 30, 20, 20],
                                "iscrowd": 1 if name == "x2.jpg" else 0})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return root


def test_coco_dataset_becomes_shards_with_contiguous_class_ids(coco_dataset, tmp_path):
    out = tmp_path / "shards"

    report = convert("coco", coco_dataset, out)

    spec = load_data_yaml(out / "data.yaml")
    assert spec.names == ["person", "car", "train"]
    assert spec.category_ids == [1, 3, 7]  # COCO's own ids, for results files scored against COCO's annotations
    train = read_split(spec.train)
    assert sorted(train) == ["x1", "x2"]
    boxes, classes = train["x1"][1].boxes, train["x1"][1].classes
    np.testing.assert_allclose(boxes, [[10, 5, 30, 15], [50, 30, 60, 40]])  # the second clipped to 60x40
    assert classes.tolist() == [2, 1]
    assert train["x2"][1].classes.tolist() == [2]  # its crowd annotation is not a box to train on ...
    assert train["x2"][1].crowd_classes.tolist() == [1]  # ... but a crowd region, clipped like a box
    np.testing.assert_allclose(train["x2"][1].crowd_boxes, [[50, 30, 60, 40]])
    assert train["x1"][1].crowd_classes.tolist() == []
    assert "1 crowd annotations (iscrowd=1) kept as crowd regions" in " ".join(report.notes)
    assert {e.source: e.reason for e in report.excluded} == {"sized_wrong.jpg": "image_size_mismatch",
                                                             "gone.jpg": "missing_file"}
    assert sorted(read_split(spec.val)) == ["y"]


def test_shard_cli_converts_and_reports(coco_dataset, tmp_path, capsys):
    code = main(["data", "shard", "--format", "coco", "--src", str(coco_dataset / "annotations/instances_val2017.json"),
                 "--out", str(tmp_path / "out"), "--samples-per-shard", "5"])

    assert code == 0
    assert "val: 1 samples written" in capsys.readouterr().out
    assert (tmp_path / "out/val/index.json").is_file() and (tmp_path / "out/report.json").is_file()


def test_converting_coco_train_then_val_into_one_folder_gives_a_data_yaml_with_both(coco_dataset, yolo_dataset,
                                                                                   tmp_path):
    out = tmp_path / "out"
    first = convert("coco", coco_dataset / "annotations/instances_train2017.json", out)
    assert "no val split yet" in " ".join(first.notes)
    second = convert("coco", coco_dataset / "annotations/instances_val2017.json", out)
    assert not any("split yet" in note for note in second.notes)
    spec = load_data_yaml(out / "data.yaml")  # refused before: the second call dropped train from data.yaml
    assert sorted(read_split(spec.train)) == ["x1", "x2"] and sorted(read_split(spec.val)) == ["y"]

    # Another dataset (classes cat, dog) into the same folder is refused before it overwrites anything.
    with pytest.raises(DataSpecError, match=r"data.yaml: this folder already holds a dataset with the classes"):
        convert("yolo", yolo_dataset / "data.yaml", out)
    assert sorted(read_split(load_data_yaml(out / "data.yaml").train)) == ["x1", "x2"]


def test_shard_cli_names_the_file_and_key_of_a_bad_source(tmp_path, capsys):
    (tmp_path / "data.yaml").write_text("train: images\nnames: [a]\n")

    code = main(["data", "shard", "--format", "yolo", "--src", str(tmp_path / "data.yaml"), "--out",
                 str(tmp_path / "out")])

    assert code == 2
    assert "data.yaml: key 'train'" in capsys.readouterr().err
