"""Training data straight from a YOLO data.yaml or a COCO json: converted once into a cache beside the dataset,
reused by later runs, rebuilt when a source file changes; bad input gives a clear error or a counted skip."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from yolotr.data.dataset_cache import resolve_data
from yolotr.data.errors import DataSpecError
from yolotr.data.spec import load_data_yaml


def write_image(path: Path, width: int = 48, height: int = 40, fmt: str = ".jpg") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((height, width, 3), 80, dtype=np.uint8)
    image[5:25, 8:30] = (220, 60, 30)
    path.write_bytes(cv2.imencode(fmt, image)[1].tobytes())


def write_label(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def ultralytics_set(tmp_path) -> Path:
    """The ultralytics layout: datasets/mine/{images,labels}/{train,val}, a data.yaml with `path` and names dict;
    val given as a txt list of images, train as a list of two folders."""
    root = tmp_path / "mine"
    for i in range(3):
        write_image(root / "images/train/a" / f"{i}.jpg")
        write_label(root / "labels/train/a" / f"{i}.txt", "0 0.4 0.4 0.4 0.5\n")
    write_image(root / "images/train/b/x.png", fmt=".png")
    write_label(root / "labels/train/b/x.txt", "1 0.5 0.5 0.3 0.3\n")
    write_image(root / "images/train/b/scan.tif", fmt=".tiff")  # any format PIL decodes
    write_label(root / "labels/train/b/scan.txt", "1 0.5 0.5 0.3 0.3\n")
    write_image(root / "images/val/v.jpg")
    write_label(root / "labels/val/v.txt", "1 0.5 0.5 0.3 0.3\n")
    (root / "val.txt").write_text("images/val/v.jpg\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": ["images/train/a", "images/train/b"],
                                                    "val": "val.txt", "names": {0: "cat", 1: "dog"}}))
    return root


def test_the_first_use_converts_into_a_cache_beside_the_dataset_and_later_uses_reuse_it(ultralytics_set, capfd):
    shards = resolve_data(ultralytics_set / "data.yaml")

    assert shards.parent.parent == ultralytics_set / ".yolotr" / "data"
    spec = load_data_yaml(shards)
    assert spec.names == ["cat", "dog"] and spec.train.num_samples == 5 and spec.val.num_samples == 1
    assert "converting" in capfd.readouterr().err
    written = {p: p.stat().st_mtime_ns for p in shards.parent.rglob("*.tar")}

    assert resolve_data(ultralytics_set / "data.yaml") == shards
    assert "converting" not in capfd.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in shards.parent.rglob("*.tar")} == written


def test_a_changed_label_or_a_new_image_rebuilds_the_cache(ultralytics_set):
    first = resolve_data(ultralytics_set / "data.yaml")
    label = ultralytics_set / "labels/train/a/0.txt"
    label.write_text("1 0.4 0.4 0.4 0.5\n")
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    second = resolve_data(ultralytics_set / "data.yaml")
    assert second != first and not first.parent.exists()  # the stale conversion is gone
    write_image(ultralytics_set / "images/train/a/new.jpg")
    third = resolve_data(ultralytics_set / "data.yaml")
    assert third != second and load_data_yaml(third).train.num_samples == 6


def test_a_configured_cache_folder_and_a_read_only_dataset_folder(ultralytics_set, tmp_path, monkeypatch):
    cached = resolve_data(ultralytics_set / "data.yaml", cache_dir=tmp_path / "cache")
    assert cached.is_relative_to(tmp_path / "cache") and not (ultralytics_set / ".yolotr").exists()
    (ultralytics_set / ".yolotr").write_text("")  # as if the dataset's folder refused a cache folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    assert resolve_data(ultralytics_set / "data.yaml").is_relative_to(tmp_path / "home-cache" / "yolotr")


def test_bad_labels_are_counted_skips_listed_with_their_reason(ultralytics_set):
    write_image(ultralytics_set / "images/train/a/short.jpg")
    write_label(ultralytics_set / "labels/train/a/short.txt", "0 0.5 0.5 0.2\n")  # wrong column count
    write_image(ultralytics_set / "images/train/a/outside.jpg")
    write_label(ultralytics_set / "labels/train/a/outside.txt", "0 1.4 0.5 0.2 0.2\n0 0.9 0.5 0.4 0.4\n")
    write_label(ultralytics_set / "labels/train/a/lost.txt", "0 0.5 0.5 0.2 0.2\n")  # its image is gone

    shards = resolve_data(ultralytics_set / "data.yaml")

    report = json.loads((shards.parent / "report.json").read_text())
    assert {(Path(e["source"]).name, e["reason"]) for e in report["excluded"]} == {
        ("short.jpg", "malformed_label_row"), ("lost.txt", "label_without_image")}
    assert report["boxes_dropped_outside_image"] == 1 and report["boxes_clipped"] == 1
    assert load_data_yaml(shards).train.num_samples == 6


@pytest.mark.parametrize("problem, message", [
    ("missing_folder", "images/test is neither an image folder nor an image list file"),
    ("empty_split", "no images found"),
    ("all_invalid", "no valid sample in split val"),
])
def test_a_missing_folder_or_an_empty_split_is_a_clear_error_naming_it(ultralytics_set, problem, message):
    doc = yaml.safe_load((ultralytics_set / "data.yaml").read_text())
    if problem == "missing_folder":
        doc["val"] = "images/test"
    elif problem == "empty_split":
        (ultralytics_set / "images/empty").mkdir()
        doc["val"] = "images/empty"
    else:
        write_label(ultralytics_set / "labels/val/v.txt", "0 0.5\n")
    (ultralytics_set / "data.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(DataSpecError, match=message):
        resolve_data(ultralytics_set / "data.yaml")


def test_a_coco_json_is_converted_and_a_val_only_json_serves_validation(tmp_path):
    root = tmp_path / "coco"
    write_image(root / "val2017" / "000000000007.jpg", 60, 40)
    (root / "annotations").mkdir()
    json_file = root / "annotations/instances_val2017.json"
    json_file.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "000000000007.jpg", "width": 60, "height": 40}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}))

    shards = resolve_data(json_file)

    spec = load_data_yaml(shards, splits=("val",))
    assert spec.train is None and spec.val.num_samples == 1
    assert spec.names == ["person", "car"] and spec.category_ids == [1, 3]
    with pytest.raises(DataSpecError, match="key 'train' is missing"):
        load_data_yaml(shards)  # training needs both: a COCO folder with both jsons gives them
    assert resolve_data(root).parent != shards.parent  # the folder form has a cache of its own


def test_a_shard_data_yaml_is_used_as_it_is(tmp_path):
    from yolotr.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--train", "2", "--val", "2", "--imgsz", "64"]) == 0
    assert resolve_data(tmp_path / "s/data.yaml") == tmp_path / "s/data.yaml"
    assert not (tmp_path / "s/.yolotr").exists()


def odd_sized_set(root: Path) -> Path:
    """Images of 100x60 and 48x90 (neither square nor a training size), one box each."""
    for i, (width, height) in enumerate([(100, 60), (48, 90), (100, 60), (48, 90)]):
        write_image(root / "images/train" / f"{i}.jpg", width, height)
        write_label(root / "labels/train" / f"{i}.txt", "0 0.3 0.3 0.2 0.25\n")
    write_image(root / "images/val/v.jpg", 48, 90)
    write_label(root / "labels/val/v.txt", "1 0.5 0.5 0.3 0.3\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                                    "names": ["cat", "dog"]}))
    return root / "data.yaml"


def test_a_label_edited_with_its_size_and_mtime_kept_is_converted_again(tmp_path):
    data = odd_sized_set(tmp_path / "set")
    first = resolve_data(data)
    label = tmp_path / "set/labels/train/1.txt"
    stat = label.stat()
    label.write_text("1 0.3 0.3 0.2 0.25\n")  # same size: the class changed
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    second = resolve_data(data)

    assert second != first
    assert load_data_yaml(second).train.num_samples == 4
    with tarfile.open(next((second.parent / "train").glob("*.tar"))) as tar:
        labels = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert sorted(label["classes"][0] for label in labels) == [0, 0, 0, 1]
    assert {(label["width"], label["height"]) for label in labels} == {(100, 60), (48, 90)}


def test_a_conversion_a_run_folder_records_is_kept_by_later_conversions_until_the_run_is_deleted(tmp_path):
    data = odd_sized_set(tmp_path / "set")
    run = tmp_path / "runs/a"
    mine = resolve_data(data, run_dir=run)
    assert json.loads((run / "data_conversion.json").read_text())["conversion"] == str(mine.parent)
    label = tmp_path / "set/labels/train/0.txt"
    label.write_text(label.read_text() + "1 0.6 0.6 0.2 0.2\n")

    edited = resolve_data(data)  # another run's start: a new conversion, run a's kept
    assert edited != mine and mine.is_file() and load_data_yaml(mine).train.num_samples == 4
    assert resolve_data(data, run_dir=run) == mine  # run a resumed: its own conversion, not the edited files'

    write_label(tmp_path / "set/labels/train/2.txt", "1 0.3 0.3 0.2 0.25\n")
    shutil.rmtree(run)
    newest = resolve_data(data)  # nothing reads the two earlier conversions now
    assert sorted(p.name for p in newest.parent.parent.iterdir() if p.is_dir()) == [newest.parent.name]


def test_a_resume_whose_conversion_is_gone_reconverts_restored_files_and_refuses_edited_ones(tmp_path):
    data = odd_sized_set(tmp_path / "set")
    run = tmp_path / "runs/a"
    label = tmp_path / "set/labels/train/3.txt"
    original = label.read_text()
    mine = resolve_data(data, run_dir=run)
    shutil.rmtree(mine.parent)  # the cache cleared by hand
    label.write_text(original + "0 0.6 0.6 0.2 0.2\n")

    with pytest.raises(DataSpecError, match=r"trained on a conversion of it that is gone .*\(train: label files "
                                            r"edited, added or removed\): restore them") as refused:
        resolve_data(data, run_dir=run)
    assert refused.value.exit_code == 2

    label.write_text(original)  # restored: the same fingerprint, converted again into the same folder
    assert resolve_data(data, run_dir=run) == mine


def test_a_zero_size_box_is_counted_as_such_and_its_image_as_left_without_boxes(tmp_path, capfd):
    data = odd_sized_set(tmp_path / "set")
    write_label(tmp_path / "set/labels/train/0.txt", "0 0.3 0.3 0 0.25\n")  # zero width
    write_label(tmp_path / "set/labels/train/1.txt", "0 0.3 0.3 0.2 0.25\n0 0.5 0.5 0.2 0\n")  # one of two

    shards = resolve_data(data)

    report = json.loads((shards.parent / "report.json").read_text())
    assert report["boxes_dropped_zero_size"] == 2 and report["boxes_dropped_outside_image"] == 0
    assert report["images_left_without_boxes"] == 1 and report["background_images"] == 0
    err = capfd.readouterr().err
    assert "2 dropped (zero width or height)" in err
    assert "images written without boxes because every box of their label was dropped: 1" in err
