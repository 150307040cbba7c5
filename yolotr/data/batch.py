"""The batches the streams deliver, and how decoded samples become one.

Images are built in a (B, S, S, 3) uint8 buffer (OpenCV works on HWC) and handed out as its (B, 3, S, S) view: a
channels_last tensor, no transpose copy. `.float()`, `.to(device)` and convolutions accept it as it is; call
`.contiguous()` if some code needs NCHW memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import get_worker_info

from yolotr.config.augment import AugmentConfig
from yolotr.data.augment import augment_into, letterbox_into
from yolotr.data.augment_plan import AugmentPlan, LabelledSample, PartnerDraw, plan_augmentation, sample_rng
from yolotr.data.decode import DecodedSample
from yolotr.data.geometry import FILL_VALUE


@dataclass
class Batch:
    """A local training batch."""

    # (B, 3, S, S) uint8, channels_last memory; None while only planned (`plans`): the stream renders them
    images: torch.Tensor | None
    targets: torch.Tensor  # (N, 6) float32 rows [image_index_in_batch, class, cx, cy, w, h], normalised to [0, 1]
    keys: list[str]  # the primary sample of each image; these samples count as trained on
    epoch: int
    step: int  # step in epoch
    # train.augment_on: device: each image's augmentation plan, its sources `EncodedSample`s (not yet decoded)
    plans: list[AugmentPlan] | None = None

    def pin_memory(self) -> Batch:
        """A copy in pinned memory (what DataLoader(pin_memory=True) calls), for asynchronous copies to the GPU."""
        images = self.images.pin_memory() if self.images is not None else None
        return replace(self, images=images, targets=self.targets.pin_memory())

    def select(self, keep: Sequence[int]) -> Batch:
        """The batch with only images `keep` (indices, in order), their targets renumbered."""
        if len(keep) == len(self.keys):
            return self
        new_index = torch.full((len(self.keys),), -1, dtype=torch.float32)
        new_index[list(keep)] = torch.arange(len(keep), dtype=torch.float32)
        rows = self.targets[new_index[self.targets[:, 0].long()] >= 0]  # (N', 6)
        rows[:, 0] = new_index[rows[:, 0].long()]
        return replace(self, images=self.images[list(keep)] if self.images is not None else None, targets=rows,
                       keys=[self.keys[i] for i in keep],
                       plans=[self.plans[i] for i in keep] if self.plans is not None else None)


@dataclass
class ValBatch:
    """A validation batch: letterboxed, not augmented."""

    images: torch.Tensor  # (B, 3, S, S) uint8, channels_last memory
    targets: torch.Tensor  # (N, 6) float32 [image_index_in_batch, class, cx, cy, w, h], letterboxed, normalised
    keys: list[str]
    image_ids: list[int]  # position of each image in the val index: its COCO image id
    orig_sizes: list[tuple[int, int]]  # (h, w) of each original image
    # (ratio, (pad_w, pad_h)) of each image: original pixels = (letterboxed pixels - pad) / ratio
    ratio_pad: list[tuple[float, tuple[float, float]]]

    def pin_memory(self) -> ValBatch:
        return replace(self, images=self.images.pin_memory(), targets=self.targets.pin_memory())


@dataclass
class BatchReport:
    """Bookkeeping that travels with a batch from the worker to the training process, which counts it."""

    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (key, reason, detail) of skipped samples
    quarantined: int = 0
    samples_seen: int = 0  # positions of this batch (delivered + corrupt + quarantined)
    bytes_read: int = 0
    unreadable_shards: list[str] = field(default_factory=list)
    build_s: float = 0.0  # the worker's time to build the batch (data/prefetch.py)


def allocate_images(count: int, size: int) -> torch.Tensor:
    """(count, S, S, 3) uint8 filled with the letterbox grey.

    In a DataLoader worker the buffer is allocated in shared memory, as torch's default_collate does: the batch
    reaches the training process through shared memory anyway, and a private buffer would be copied there first
    (about as costly as building the buffer).
    """
    shape = (count, size, size, 3)
    if get_worker_info() is None:
        return torch.full(shape, FILL_VALUE, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(count * size * size * 3)
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape).fill_(FILL_VALUE)


def build_train_images(samples: Sequence[DecodedSample], *, size: int, augment: AugmentConfig | None, seed: int,
                       epoch: int, partners: PartnerDraw | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) and targets (N, 6) of a training batch; samples are in delivery order.
    partners: draws mosaic partners (from the whole dataset); None: the batch's other samples."""
    buffer = allocate_images(len(samples), size)  # (B, S, S, 3)
    rows = []
    for i, sample in enumerate(samples):
        out = buffer[i].numpy()  # (S, S, 3) view
        if augment is None:
            boxes, _, _ = letterbox_into(out, sample)
        else:
            pool = _partners(samples, i, partners)
            boxes = augment_into(out, sample, pool, sample_rng(seed, epoch, sample.key), augment)
        rows.append(boxes)
    return buffer.permute(0, 3, 1, 2), targets_tensor(rows, size)


def plan_train_batch(samples: Sequence[LabelledSample], *, size: int, augment: AugmentConfig, seed: int, epoch: int,
                     partners: PartnerDraw | None = None) -> tuple[list[AugmentPlan], torch.Tensor]:
    """The plans and targets (N, 6) of a training batch, as `build_train_images` would draw them (the same generator
    per sample, so the same boxes), without a pixel: a device renders them (`device_augment.render_plans`)."""
    plans = [plan_augmentation(sample, _partners(samples, i, partners), sample_rng(seed, epoch, sample.key), augment,
                               size) for i, sample in enumerate(samples)]
    return plans, targets_tensor([plan.boxes for plan in plans], size)


def _partners(samples: Sequence[LabelledSample], index: int,
              partners: PartnerDraw | None) -> PartnerDraw | list[LabelledSample]:
    """Where sample `index`'s mosaic partners come from: `partners`, or else the batch's other samples."""
    return partners or [s for j, s in enumerate(samples) if j != index]


def build_val_images(samples: Sequence[DecodedSample], *, size: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Images (B, 3, S, S), targets (N, 6) and the (ratio, pad) of each image of a validation batch."""
    buffer = allocate_images(len(samples), size)  # (B, S, S, 3)
    rows, ratio_pad = [], []
    for i, sample in enumerate(samples):
        boxes, ratio, pad = letterbox_into(buffer[i].numpy(), sample)
        rows.append(boxes)
        ratio_pad.append((ratio, (float(pad[0]), float(pad[1]))))
    return buffer.permute(0, 3, 1, 2), targets_tensor(rows, size), ratio_pad


def targets_tensor(rows: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Per-image (n_i, 5) [class, x1, y1, x2, y2] pixel boxes → (N, 6) [image, class, cx, cy, w, h] normalised."""
    parts = []
    for image_index, boxes in enumerate(rows):
        xyxy = boxes[:, 1:5] / size
        parts.append(np.column_stack([
            np.full(len(boxes), image_index, dtype=np.float64), boxes[:, 0],
            (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
            xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1],
        ]))
    flat = np.concatenate(parts, axis=0) if parts else np.zeros((0, 6))
    return torch.from_numpy(flat.astype(np.float32).reshape(-1, 6))
