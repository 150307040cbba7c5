"""Decodes the images of a batch in one call on a device: on a CUDA device torchvision hands the JPEGs to nvJPEG
together, on the CPU it decodes them one by one with libjpeg-turbo (as decode.py does).

Results are (3, H, W) uint8 RGB tensors, torchvision's layout, which device_augment.render_plans takes: the same
pixels as decode.decode_image's (H, W, 3), transposed (on a CUDA device, nvJPEG's IDCT may round a few values
differently from libjpeg-turbo's). What the batched call cannot do goes through decode.decode_image on the CPU, so
every sample is decoded and rejected as the CPU path would: PNGs, JPEGs with an EXIF orientation (nvJPEG does not
turn images upright), and, when the batched call fails, the samples that also fail on their own, which become
`SampleError`s that name their key.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from yolotr.data.decode import JPEG_EXTENSIONS, decode_image
from yolotr.data.errors import SampleError

_EXIF_ORIENTATION_TAG = 0x0112
_EXIF_SEARCH_BYTES = 1 << 16  # the APP1 (EXIF) segment comes first and is at most 64 KiB


@dataclass(frozen=True)
class EncodedImage:
    key: str
    data: bytes | bytearray | memoryview
    ext: str  # the tar member's extension: "jpg", "png", ...


@dataclass
class DecodedBatch:
    images: dict[str, torch.Tensor] = field(default_factory=dict)  # key → (3, H, W) uint8 RGB on the device
    errors: list[SampleError] = field(default_factory=list)  # samples that do not decode, each with its key


def decode_batch(encoded: Sequence[EncodedImage], device: torch.device | str) -> DecodedBatch:
    """Decodes `encoded` onto `device`: the plain JPEGs in one batched call, everything else one by one."""
    device = torch.device(device)
    batch = DecodedBatch()
    plain = []
    for item in encoded:
        if item.ext in JPEG_EXTENSIONS and not _has_exif_rotation(item.data):
            plain.append(item)
        else:
            _decode_on_cpu(item, device, batch)
    if not plain:
        return batch
    try:
        decoded = _decode_jpegs([_as_tensor(item.data) for item in plain], device)
    except RuntimeError:  # the batched call returns nothing when one image fails: find which, one by one
        for item in plain:
            try:
                batch.images[item.key] = _decode_jpegs([_as_tensor(item.data)], device)[0]
            except RuntimeError:
                _decode_on_cpu(item, device, batch)
        return batch
    batch.images.update((item.key, image) for item, image in zip(plain, decoded))
    return batch


def _decode_jpegs(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's notes on TorchCodec and on beta device decoding
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)


def _decode_on_cpu(item: EncodedImage, device: torch.device, batch: DecodedBatch) -> None:
    """decode.py's decoder, moved to the device; its SampleError, with the key, when the image does not decode."""
    try:
        hwc = decode_image(item.data, item.ext)  # (H, W, 3)
    except SampleError as err:
        err.key = item.key
        batch.errors.append(err)
        return
    batch.images[item.key] = torch.from_numpy(hwc).permute(2, 0, 1).to(device)  # (3, H, W)


def _as_tensor(data: bytes | bytearray | memoryview) -> torch.Tensor:
    # A copy: torch.frombuffer on immutable bytes warns, and the bytes may be a view into a reused read buffer.
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _has_exif_rotation(data: bytes | bytearray | memoryview) -> bool:
    """Whether a JPEG carries an EXIF orientation other than 1 (upright). Only files with an EXIF block are opened."""
    if b"Exif\x00\x00" not in bytes(data[:_EXIF_SEARCH_BYTES]):
        return False
    try:
        with Image.open(io.BytesIO(bytes(data))) as opened:  # reads the header, not the pixels
            return opened.getexif().get(_EXIF_ORIENTATION_TAG, 1) != 1
    except Exception:  # noqa: BLE001 - a damaged header: let the decoders say what is wrong with it
        return False
