"""Images decode as YOLOv5 (cv2.imread) sees them, in training, conversion and prediction alike: upright by their
EXIF orientation, 16-bit PNGs scaled to 8 bits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from yolotr.data.convert_dataset import convert
from yolotr.data.decode import decode_image, decode_sample
from yolotr.data.shard_reader import ShardReader
from yolotr.data.spec import load_data_yaml
from yolotr.eval.sources import read_image

ROTATE_90_CW = 6  # EXIF orientation: the stored pixels are shown turned 90° clockwise


def write_rotated_jpeg(path: Path) -> np.ndarray:
    """A 64×48 (W×H) JPEG whose EXIF tag shows it as 48×64, with a red square at the stored top-left; returns the
    displayed image, as cv2.imread gives it (RGB)."""
    stored = np.full((48, 64, 3), 90, dtype=np.uint8)
    stored[:16, :16] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = ROTATE_90_CW
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=exif.tobytes())
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_a_jpeg_with_an_exif_orientation_decodes_upright(tmp_path):
    displayed = write_rotated_jpeg(tmp_path / "phone.jpg")
    assert displayed.shape == (64, 48, 3)  # what YOLOv5 trains on and what its labels were drawn on
    decoded = decode_image((tmp_path / "phone.jpg").read_bytes(), "jpg")
    assert decoded.shape == displayed.shape
    assert np.abs(decoded.astype(int) - displayed.astype(int)).mean() < 2
    assert decoded[:16, -16:].mean(axis=(0, 1))[0] > 180  # the red square is now top-right


def test_a_16_bit_png_keeps_its_picture_in_8_bits(tmp_path):
    grey16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), grey16)
    decoded = decode_image((tmp_path / "deep.png").read_bytes(), "png")
    assert decoded.dtype == np.uint8 and decoded.shape == (48, 64, 3)
    np.testing.assert_array_equal(decoded[..., 0], (grey16 >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decoded, cv2.cvtColor(cv2.imread(str(tmp_path / "deep.png")), cv2.COLOR_BGR2RGB))


def test_yolo_labels_of_a_rotated_photo_land_on_the_object_after_conversion(tmp_path):
    root = tmp_path / "yolo"
    write_rotated_jpeg(root / "images" / "train" / "phone.jpg")
    write_rotated_jpeg(root / "images" / "val" / "phone.jpg")
    for split in ("train", "val"):  # the red square, in the displayed 48×64 frame: x 32..48, y 0..16
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / "phone.txt").write_text(f"0 {40 / 48} {8 / 64} {16 / 48} {16 / 64}\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["red"]}))

    convert("yolo", root / "data.yaml", tmp_path / "shards")

    split = load_data_yaml(tmp_path / "shards" / "data.yaml").train
    reader = ShardReader(split)
    sample = decode_sample(split.keys[0], reader.read(0), nc=1)  # image and label sizes agree
    reader.close()
    assert (sample.label.width, sample.label.height) == (48, 64)
    x1, y1, x2, y2 = np.round(sample.label.boxes[0]).astype(int)
    assert (x1, y1, x2, y2) == (32, 0, 48, 16)
    assert sample.image[y1:y2, x1:x2].mean(axis=(0, 1))[0] > 180  # the box holds the red square


@pytest.mark.parametrize("name", ["phone.jpg", "deep.tif"])
def test_prediction_reads_images_as_training_does(tmp_path, name):
    path = tmp_path / name
    if name == "phone.jpg":
        expected = write_rotated_jpeg(path)
    else:
        grey16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
        Image.fromarray(grey16).save(path)
        expected = np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == expected.shape
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 2
