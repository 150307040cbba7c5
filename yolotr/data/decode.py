"""From a sample's raw tar members to a decoded image and a checked label.

Images are decoded with torchvision (libjpeg-turbo / libpng), which decodes into HWC memory and returns a CHW view
of it; we keep the HWC array so OpenCV can warp it without a copy, and images stay uint8 until the trainer moves
them to the device.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg, decode_png

from yolotr.data.errors import SampleError
from yolotr.data.labels import DetectionLabel, parse_label

JPEG_EXTENSIONS = ("jpg", "jpeg")
PNG_EXTENSIONS = ("png",)


@dataclass(frozen=True)
class DecodedSample:
    key: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: DetectionLabel


def decode_image(data: bytes | bytearray | memoryview, ext: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from encoded JPEG or PNG bytes, as YOLOv5 (cv2.imread) sees them: turned upright by the
    EXIF orientation tag (labels are drawn on the displayed image), 16-bit PNGs scaled to 8 bits. Raises
    `SampleError('invalid_image')`."""
    if ext not in JPEG_EXTENSIONS + PNG_EXTENSIONS:
        raise SampleError("unsupported_image_format", f"extension {ext!r}")
    if len(data) == 0:
        raise SampleError("invalid_image", "empty image member")
    with warnings.catch_warnings():
        # torch warns that a buffer from immutable `bytes` is not writable (we only read it); torchvision 0.29
        # announces that its decoders will move to TorchCodec (they are still the fastest CPU JPEG path here).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = torch.frombuffer(data, dtype=torch.uint8)
        try:
            decode = decode_jpeg if ext in JPEG_EXTENSIONS else decode_png
            chw = decode(encoded, mode=ImageReadMode.RGB, apply_exif_orientation=True)  # (3, H, W), HWC memory
        except RuntimeError as err:
            raise SampleError("invalid_image", str(err).rsplit(",", 1)[-1].strip()) from None
    if chw.dtype == torch.uint16:  # a 16-bit PNG: the top 8 bits, as cv2.imread does (uint16 has no shift on CPU)
        chw = (chw.to(torch.int32) >> 8).to(torch.uint8)
    hwc = chw.permute(1, 2, 0)  # (H, W, 3)
    if not hwc.is_contiguous():  # decoders that return planar memory
        hwc = hwc.contiguous()
    return hwc.numpy()


def decode_other_format(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any format PIL decodes (BMP, TIFF, WebP, GIF, ...), upright by its EXIF orientation,
    16-bit greys in their top 8 bits (as cv2.imread). Raises `SampleError`: 'unsupported_image_format' when PIL does
    not know the format, 'invalid_image' when it knows it but the bytes do not decode."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I"):  # 16/32-bit integer grey
                grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)  # (H, W)
                return np.repeat(grey[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
            return np.array(image.convert("RGB"))  # (H, W, 3)
    except UnidentifiedImageError:
        raise SampleError("unsupported_image_format", "not a format PIL decodes") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's plugins raise all three for damaged files
        raise SampleError("invalid_image", str(err)) from None


def encode_png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) RGB image: how shards store the formats they do not keep as they are."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise SampleError("invalid_image", "could not be encoded as PNG")
    return encoded.tobytes()


@dataclass(frozen=True)
class EncodedSample:
    """A sample whose label is checked but whose image is not decoded yet: what a worker hands to a device decoder
    (train.augment_on: device). The label's width and height are taken as the image's until the decoder checks them."""

    key: str
    label: DetectionLabel
    image: bytes
    image_ext: str  # "jpg", "jpeg" or "png"


def decode_sample(key: str, members: Mapping[str, memoryview], *, nc: int) -> DecodedSample:
    """Decodes the image member and checks the label member of one sample; raises `SampleError` with the key."""
    try:
        image_ext, label = _image_member_and_label(members, nc)
        image = decode_image(members[image_ext], image_ext)
        check_image_size(image.shape[0], image.shape[1], label)
    except SampleError as err:
        err.key = key
        raise
    return DecodedSample(key=key, image=image, label=label)


def encoded_sample(key: str, members: Mapping[str, memoryview], *, nc: int) -> EncodedSample:
    """Checks the label member of one sample and keeps its image bytes (a copy: the members may be views into a
    reused read buffer); raises `SampleError` with the key."""
    try:
        image_ext, label = _image_member_and_label(members, nc)
        if len(members[image_ext]) == 0:
            raise SampleError("invalid_image", "empty image member")
    except SampleError as err:
        err.key = key
        raise
    return EncodedSample(key=key, label=label, image=bytes(members[image_ext]), image_ext=image_ext)


def check_image_size(height: int, width: int, label: DetectionLabel) -> None:
    """Raises `SampleError('image_size_mismatch')` when the decoded image is not the size its label says."""
    if (height, width) != (label.height, label.width):
        raise SampleError("image_size_mismatch", f"image is {width}x{height}, label says {label.width}x{label.height}")


def _image_member_and_label(members: Mapping[str, memoryview], nc: int) -> tuple[str, DetectionLabel]:
    image_ext = next((ext for ext in JPEG_EXTENSIONS + PNG_EXTENSIONS if ext in members), None)
    if image_ext is None:
        raise SampleError("missing_image", f"members {sorted(members)}")
    if "json" not in members:
        raise SampleError("missing_label", f"members {sorted(members)}")
    return image_ext, parse_label(members["json"], nc=nc)
