"""Augmentation hyperparameters of the training stream (applied in `yolotr.data.augment`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class AugmentConfig:
    """Augmentation hyper-parameters, with YOLOv5's names and defaults (`hyp.scratch-low.yaml`)."""

    hsv_h: float = 0.015
    """Hue jitter: the hue channel is multiplied by a factor drawn from [1 - hsv_h, 1 + hsv_h] (wrapping at 180)."""
    hsv_s: float = 0.7
    """Saturation jitter: saturation is multiplied by a factor drawn from [1 - hsv_s, 1 + hsv_s]."""
    hsv_v: float = 0.4
    """Value (brightness) jitter: value is multiplied by a factor drawn from [1 - hsv_v, 1 + hsv_v]."""
    degrees: float = 0.0
    """Rotation: an angle drawn from [-degrees, +degrees]."""
    translate: float = 0.1
    """Translation: the image centre moves by up to this fraction of the image size in x and in y."""
    scale: float = 0.5
    """Scale: a zoom factor drawn from [1 - scale, 1 + scale]."""
    shear: float = 0.0
    """Shear: shear angles in x and in y drawn from [-shear, +shear] degrees."""
    fliplr: float = 0.5
    """Probability of a horizontal flip."""
    mosaic: float = 1.0
    """Probability that an image is a 4-image mosaic."""
    mosaic_partners: Literal["dataset", "batch"] = "batch"
    """Where a mosaic's three other images come from: drawn from the whole train split, as YOLOv5 (each costs a read
    and a decode), or from the same local batch (decoded once; a batch then shares its images across its mosaics).
    The parity ablation scored `batch` higher on both seeds tried (docs/parity.md, row B5)."""

    def __post_init__(self) -> None:
        if self.mosaic_partners not in ("dataset", "batch"):
            raise ValueError(f"augment.mosaic_partners must be 'dataset' or 'batch', got {self.mosaic_partners!r}")
        for name in ("hsv_h", "hsv_s", "hsv_v", "translate", "fliplr", "mosaic"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"augment.scale must be in [0, 1), got {self.scale}")
        if not 0.0 <= self.degrees <= 180.0 or not 0.0 <= self.shear < 90.0:
            raise ValueError(f"augment.degrees must be in [0, 180] and augment.shear in [0, 90), "
                             f"got {self.degrees} and {self.shear}")
