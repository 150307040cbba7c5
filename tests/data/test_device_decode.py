"""A batch decoded in one call gives decode.py's pixels, in torchvision's (3, H, W) layout, on the device asked for;
PNGs and EXIF-rotated JPEGs too (through decode.py); a corrupt JPEG becomes decode.py's SampleError naming its key,
without costing its batchmates their images."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolotr.data.decode import decode_image
from yolotr.data.device_decode import EncodedImage, decode_batch
from yolotr.data.synth import synthetic_sample

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA device"))]


def synthetic_jpegs(count: int) -> list[EncodedImage]:
    records = [synthetic_sample("train", i, classes=4, imgsz=96, seed=3) for i in range(count)]
    return [EncodedImage(key=r.key, data=r.image, ext=r.image_ext) for r in records]


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image[..., ::-1].copy())[1].tobytes()  # OpenCV writes BGR


def rotated_jpeg() -> bytes:
    """A 64×48 JPEG whose EXIF orientation (6: turned 90° clockwise) shows it as 48×64."""
    stored = np.full((48, 64, 3), 90, dtype=np.uint8)
    stored[:16, :16] = (220, 30, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy()  # (3, H, W) → (H, W, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_of_jpegs_and_pngs_decodes_as_decode_py_does(device):
    jpegs = synthetic_jpegs(4)
    picture = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    encoded = [*jpegs[:2], EncodedImage("a_png", png(picture), "png"), *jpegs[2:],
               EncodedImage("upright_by_exif", rotated_jpeg(), "jpg")]

    batch = decode_batch(encoded, device)

    assert not batch.errors and set(batch.images) == {item.key for item in encoded}
    for item in encoded:
        image = batch.images[item.key]
        expected = decode_image(item.data, item.ext)
        assert image.device.type == device and image.dtype == torch.uint8 and image.shape[0] == 3
        assert as_hwc(image).shape == expected.shape
        diff = np.abs(as_hwc(image).astype(np.int16) - expected)
        if device == "cpu" or item.ext == "png":
            assert diff.max() == 0, item.key  # the same decoder
        else:
            assert diff.mean() < 1.0, item.key  # nvJPEG's IDCT rounds differently from libjpeg-turbo's
    np.testing.assert_array_equal(as_hwc(batch.images["a_png"]), picture)
    assert batch.images["upright_by_exif"].shape == (3, 64, 48)


@pytest.mark.parametrize("device", DEVICES)
def test_a_corrupt_jpeg_is_a_sample_error_with_its_key_and_the_others_still_decode(device):
    good = synthetic_jpegs(3)
    corrupt = EncodedImage("broken", good[0].data[:200] + b"\x00" * 50, "jpg")

    batch = decode_batch([good[0], corrupt, good[1], good[2]], device)

    assert [(err.key, err.reason) for err in batch.errors] == [("broken", "invalid_image")]
    assert "broken" in str(batch.errors[0])
    assert set(batch.images) == {item.key for item in good}
    for item in good:  # (nvJPEG's pixels are compared in the test above)
        expected = decode_image(item.data, "jpg")
        assert as_hwc(batch.images[item.key]).shape == expected.shape
        if device == "cpu":
            np.testing.assert_array_equal(as_hwc(batch.images[item.key]), expected)
