"""Settings of the model and its loss: the switches every Transformer block of a model shares, and YOLOv5's loss
hyperparameters. Plain dataclasses at the bottom layer, so that the run config, the model parser and the loss all
speak the same types.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from yolotr.config.tree import ConfigError, from_dict


@dataclass
class TransformerConfig:
    """Switches shared by every C3TR / C3TRv5 in a model (top-level yaml key ``transformer:``)."""

    qk_norm: bool = False
    """LayerNorm over each head's q and k before the dot product, which bounds the attention logits. C3TR only
    (YOLOv5's block runs inside nn.MultiheadAttention, which has no place for it)."""

    layer_scale: float = 0.0
    """Initial value of per-channel gains on every residual branch (CaiT's layer-scale); a small value such as 1e-4
    starts each layer close to the identity. 0 disables it. Both blocks."""

    xavier_init: bool | None = None
    """Xavier-uniform init of the q/k/v/out projections. None means each block's own default: on for C3TR, off for
    C3TRv5 (YOLOv5's init: PyTorch's default Linear init, Xavier only inside nn.MultiheadAttention). Both blocks."""

    num_heads: int = 4
    """Attention heads; YOLOv5 uses 4. The block width must be divisible by it. Both blocks."""

    mlp_ratio: float = 2.0
    """Hidden width of C3TR's GELU MLP as a multiple of the block width. C3TR only (YOLOv5's MLP is c -> c -> c).
    2.0, not ViT's 4.0, keeps a layer at 8c² multiply-adds per token (4c² projections + 4c² MLP), below the 10c² of
    the Bottleneck it replaces, so the transformer variant costs about what the plain model does."""

    @classmethod
    def from_yaml(cls, values: dict | None) -> TransformerConfig:
        """From a model yaml's ``transformer:`` mapping; raises ValueError as "transformer.<key>: <problem>"."""
        try:
            config = from_dict(cls, values, path="transformer")
        except ConfigError as error:
            raise ValueError(f"{error.key}: {error.problem}") from None
        for name in ("layer_scale", "mlp_ratio"):
            if getattr(config, name) < 0:
                raise ValueError(f"transformer.{name}: expected a number >= 0, got {getattr(config, name)!r}")
        if config.mlp_ratio == 0:
            raise ValueError("transformer.mlp_ratio: must be > 0")
        if config.num_heads < 1:
            raise ValueError(f"transformer.num_heads: expected a positive integer, got {config.num_heads!r}")
        return config


@dataclass
class TransformerOverrides:
    """The run config's `transformer:` section: switches that replace the model yaml's, key by key. A key left at
    None keeps the model yaml's value (the fields are `TransformerConfig`'s, checked by a test)."""

    qk_norm: bool | None = None
    """Overrides `transformer.qk_norm` of every C3TR (QK-normalisation of the attention logits)."""
    layer_scale: float | None = None
    """Overrides `transformer.layer_scale` (initial residual-branch gain; 0 disables it)."""
    xavier_init: bool | None = None
    """Overrides `transformer.xavier_init` (Xavier-uniform q/k/v/out projections)."""
    num_heads: int | None = None
    """Overrides `transformer.num_heads`."""
    mlp_ratio: float | None = None
    """Overrides `transformer.mlp_ratio` (C3TR's MLP width as a multiple of the block width)."""

    def as_yaml(self) -> dict:
        """The keys that were set, as the model yaml's `transformer:` mapping takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class LossHyp:
    """Loss hyperparameters with YOLOv5's names and defaults (hyp.scratch-low.yaml)."""

    box: float = 0.05
    """Gain of the CIoU box loss (before the 3/nl scaling)."""
    obj: float = 1.0
    """Gain of the objectness BCE (before the (imgsz/640)^2 * 3/nl scaling)."""
    cls: float = 0.5
    """Gain of the class BCE (before the nc/80 * 3/nl scaling)."""
    cls_pw: float = 1.0
    """BCEWithLogits pos_weight of the class loss."""
    obj_pw: float = 1.0
    """BCEWithLogits pos_weight of the objectness loss."""
    anchor_t: float = 4.0
    """A target matches an anchor when max(w/w_a, w_a/w, h/h_a, h_a/h) < anchor_t."""
    label_smoothing: float = 0.0
    """Class targets become 1 - eps/2 and eps/2 (YOLOv5's smooth_BCE)."""
    fl_gamma: float = 0.0
    """Focal-loss gamma for the class and objectness BCE; 0 turns focal loss off."""
