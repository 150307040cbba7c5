"""The stream's device step (`train.augment_on: device`): a planned batch decoded and rendered where it trains.

The workers read the samples, check their labels and draw every augmentation (`batch.plan_train_batch`) without
touching a pixel; the training process then decodes all the batch's sources in one call (nvJPEG on a GPU:
device_decode) and renders the plans there (device_augment). The boxes are the plans', so the targets are exactly the
CPU path's; the pixels agree up to interpolation rounding (tests/data/test_device_augment.py).

What a worker could not check is checked here: an image that does not decode, or whose size is not its label's. Such
a primary is dropped from the batch with its key and reason, as a worker drops it. An image whose *mosaic partner*
failed is dropped too, and counted apart (`partner_dropped`, not an error of its own): the CPU path would have put
the primary in the partner's place, but here the boxes were already drawn with that partner.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import cast

import torch

from yolotr.data.batch import Batch
from yolotr.data.decode import EncodedSample, check_image_size
from yolotr.data.device_augment import render_plans
from yolotr.data.device_decode import EncodedImage, decode_batch
from yolotr.data.errors import SampleError


@dataclass
class RenderedBatch:
    batch: Batch  # images on the device, in channels_last memory; without the images that failed
    errors: list[SampleError] = field(default_factory=list)  # primaries that failed, each with its key
    partner_dropped: list[str] = field(default_factory=list)  # keys of primaries dropped for a failed partner


def render_batch(batch: Batch, device: torch.device, size: int) -> RenderedBatch:
    """Decodes the sources of `batch.plans` on `device` and renders the plans that are whole, at `size`² pixels."""
    assert batch.plans is not None, "a batch built with pixels has nothing to render"
    sources: dict[str, EncodedSample] = {}
    for plan in batch.plans:
        for source in plan.sources:
            sources.setdefault(source.sample.key, cast(EncodedSample, source.sample))  # planned from encoded samples
    decoded = decode_batch([EncodedImage(s.key, s.image, s.image_ext) for s in sources.values()], device)
    failed = {err.key: err for err in decoded.errors}
    for key, image in decoded.images.items():  # (3, H, W)
        try:
            check_image_size(image.shape[1], image.shape[2], sources[key].label)
        except SampleError as err:
            err.key = key
            failed[key] = err

    result, keep = RenderedBatch(batch), []
    for index, (key, plan) in enumerate(zip(batch.keys, batch.plans)):
        if key in failed:
            result.errors.append(failed[key])
        elif any(source.sample.key in failed for source in plan.sources):
            result.partner_dropped.append(key)
        else:
            keep.append(index)
    kept = batch.select(keep)
    if kept.plans:
        images = render_plans(kept.plans, decoded.images)
    else:  # nothing usable: an empty local batch, which the trainer handles as any other
        images = torch.empty((0, size, size, 3), dtype=torch.uint8, device=device).permute(0, 3, 1, 2)
    result.batch = replace(kept, images=images, plans=None)
    return result
