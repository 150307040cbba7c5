"""`yolotr data export --format yolo`: the shards as a YOLOv5 folder that another trainer reads as the same images and
boxes, and that `yolotr data shard --format yolo` reads back into the same samples."""

import numpy as np
import pytest
import yaml

from yolotr.cli import main
from yolotr.data.convert_dataset import convert
from yolotr.data.export_yolo import export_yolo
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml
from yolotr.data.synth import write_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "shards", train=12, val=5, classes=3,
                                   imgsz=96, seed=3, samples_per_shard=5)


def test_every_image_is_written_byte_for_byte_with_its_boxes_as_normalised_rows(synth, tmp_path):
    data_yaml, report = export_yolo(synth, tmp_path / "yolo")
    doc = yaml.safe_load(data_yaml.read_text())
    assert doc == {"path": str((tmp_path / "yolo").resolve()), "train": "images/train", "val": "images/val", "nc": 3,
                   "names": {0: "circle", 1: "square", 2: "triangle"}}
    assert report.written == {"train": 12, "val": 5} and not report.skipped
    spec = load_data_yaml(synth)
    reader = ShardReader(spec.val)
    for i, key in enumerate(spec.val.keys):
        members = reader.read(i)
        assert (tmp_path / "yolo" / "images" / "val" / f"{key}.jpg").read_bytes() == bytes(members["jpg"])
        label = yaml.safe_load(bytes(members["json"]))
        rows = np.loadtxt(tmp_path / "yolo" / "labels" / "val" / f"{key}.txt", ndmin=2)
        boxes = np.array(label["boxes"])  # (n, 4) x1 y1 x2 y2 pixels
        w, h = label["width"], label["height"]
        expected = np.column_stack([label["classes"], (boxes[:, 0] + boxes[:, 2]) / 2 / w,
                                    (boxes[:, 1] + boxes[:, 3]) / 2 / h, (boxes[:, 2] - boxes[:, 0]) / w,
                                    (boxes[:, 3] - boxes[:, 1]) / h])
        np.testing.assert_allclose(rows, expected, atol=1e-6)
    reader.close()


def test_sharding_the_export_again_gives_the_same_boxes(synth, tmp_path):
    data_yaml, _ = export_yolo(synth, tmp_path / "yolo")
    convert("yolo", data_yaml, tmp_path / "again")
    original, again = load_data_yaml(synth), load_data_yaml(tmp_path / "again" / "data.yaml")
    assert again.train.num_samples == 12 and again.val.num_samples == 5
    first, second = ShardReader(original.val), ShardReader(again.val)
    for i in range(5):
        a, b = (yaml.safe_load(bytes(r.read(i)["json"])) for r in (first, second))
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=2e-3)  # 6 decimals of a 96 px side
        assert a["classes"] == b["classes"]
    first.close(), second.close()


def test_the_cli_refuses_a_folder_that_holds_something_else(synth, tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["data", "export", "--format", "yolo", "--src", str(synth), "--out", str(tmp_path / "busy")]) == 2
    assert "is not an earlier export" in capsys.readouterr().err  # one line on stderr, from the CLI
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert main(["data", "export", "--src", str(synth), "--out", str(tmp_path / "fresh")]) == 0
    assert "wrote 12 train, 5 val images" in capsys.readouterr().out
