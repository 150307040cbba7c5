"""Transformer versions of YOLOv5's C3 block.

Two blocks, chosen by the module name in the model yaml:

* ``C3TR``   — yolotr's block, stable by construction: pre-LayerNorm residual layers, attention through
  ``F.scaled_dot_product_attention`` with fp32 softmax statistics under bf16 autocast, a 2-D sine-cosine position
  encoding computed for the actual H x W, Xavier-uniform q/k/v/out projections, optional QK-normalisation and
  layer-scale, GELU MLP.
* ``C3TRv5`` — YOLOv5's own ``C3TR`` (no norms, ``nn.MultiheadAttention``, a learned linear position term, a linear
  MLP without activation), parameter for parameter. It is the baseline the stability study compares against.

So a YOLOv5 yaml that says ``C3TR`` loads unchanged and gets yolotr's block; write ``C3TRv5`` to get YOLOv5's.

Both replace only C3's inner ``m``; the three 1x1 convolutions around it stay. The blocks take plain arguments; the
model-wide switches a yaml gives (``transformer:``, `yolotr.config.model.TransformerConfig`) reach them as keywords
through the model parser.

Learning-rate groups: `TRANSFORMER_TYPES` lists the classes whose ``parameters()`` are "Transformer parameters":

* `TransformerBlock` (inside C3TR): per layer ``norm1``/``norm2`` (LayerNorm weight+bias), ``attn.q``/``attn.k``/
  ``attn.v``/``attn.proj`` (Linear weight+bias), ``attn.q_norm``/``attn.k_norm`` (LayerNorm, with qk_norm),
  ``mlp.fc1``/``mlp.fc2`` (Linear weight+bias), ``ls1.gamma``/``ls2.gamma`` (with layer_scale). The sine-cosine
  position encoding has no parameters.
* `TransformerBlockV5` (inside C3TRv5): ``linear`` (the learned position term), per layer ``q``/``k``/``v``/
  ``fc1``/``fc2`` (Linear weight), ``ma.in_proj_weight``/``ma.in_proj_bias``/``ma.out_proj`` (the attention's own
  projections), and ``ls1.gamma``/``ls2.gamma`` with layer_scale.

C3TR's ``cv1``/``cv2``/``cv3`` convolutions are not part of either and train like every other convolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from yolotr.model.common import C3


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) feature map -> (B, H·W, C) tokens; token i is the pixel at row i // W, column i % W."""
    # (B, C, H, W) -> flatten(2) -> (B, C, H·W) -> transpose(1, 2) -> (B, H·W, C)
    return x.flatten(2).transpose(1, 2)


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `map_to_tokens`: (B, H·W, C) tokens -> (B, C, H, W) feature map."""
    batch, _, channels = tokens.shape
    # (B, H·W, C) -> transpose(1, 2) -> (B, C, H·W) -> reshape -> (B, C, H, W). Reshaping (B, H·W, C) straight to
    # (B, C, H, W) without the transpose keeps the shape but scrambles pixels and channels.
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


def sincos_position_encoding(
    height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype, temperature: float = 10000.0
) -> torch.Tensor:
    """2-D sine-cosine position encoding (MAE/ViTDet style) for an H x W grid, returned as (H·W, dim).

    The channels are four quarters: sin(row·ω), cos(row·ω), sin(col·ω), cos(col·ω) with ω_k = T^(-k/(dim/4)).
    Integer positions keep the dot product between two encodings a function of their offset only, so the
    encoding means the same thing at any input size. Computed in fp32 from the actual grid, then cast.
    """
    if dim % 4:
        raise ValueError(f"sine-cosine position encoding needs a channel count divisible by 4, got {dim}")
    quarter = dim // 4
    omega = temperature ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # (dim/4,)
    rows = torch.arange(height, device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    grid_row, grid_col = torch.meshgrid(rows, cols, indexing="ij")  # (H, W) each
    # (H, W) -> (H·W, 1) in row-major order, the token order of map_to_tokens; times (1, dim/4) -> (H·W, dim/4)
    row_angles = grid_row.reshape(-1, 1) * omega.reshape(1, -1)
    col_angles = grid_col.reshape(-1, 1) * omega.reshape(1, -1)
    encoding = torch.cat((row_angles.sin(), row_angles.cos(), col_angles.sin(), col_angles.cos()), dim=1)  # (H·W, dim)
    return encoding.to(dtype)


def attention_with_fp32_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`F.scaled_dot_product_attention` whose softmax max/sum are never accumulated in bf16/fp16.

    On CUDA the flash, memory-efficient and cuDNN kernels keep those statistics in fp32 registers for bf16 inputs,
    so q/k/v go in as they are. On CPU, autocast puts SDPA on its lower-precision list and the kernel then works in
    bf16, so there we leave autocast and run it on fp32 q/k/v (the block is at stride 32: a few hundred tokens, the
    upcast costs next to nothing) and cast the result back to the input dtype.
    """
    on_cpu_low_precision = q.device.type == "cpu" and (q.dtype != torch.float32 or torch.is_autocast_enabled("cpu"))
    if not on_cpu_low_precision:
        return F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    return out.to(v.dtype)


class LayerScale(nn.Module):
    """Per-channel gain on a residual branch, initialised small so each layer starts near the identity."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _layer_scale_or_identity(dim: int, init_value: float) -> nn.Module:
    return LayerScale(dim, init_value) if init_value > 0 else nn.Identity()


class SelfAttention(nn.Module):
    """Multi-head self-attention over (B, L, C) tokens; the position encoding is added to the q/k inputs only."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, xavier_init: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"transformer width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        if xavier_init:
            for linear in (self.q, self.k, self.v, self.proj):
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        # (B, L, C) -> (B, L, heads, C/heads) -> transpose(1, 2) -> (B, heads, L, C/heads)
        return x.reshape(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        batch, length, channels = x.shape
        # Position goes into q and k (DETR-style), not v, so the values and the block's output stay free of it.
        q = self.q_norm(self._split_heads(self.q(x + pos)))
        k = self.k_norm(self._split_heads(self.k(x + pos)))
        v = self._split_heads(self.v(x))
        out = attention_with_fp32_softmax(q, k, v)  # (B, heads, L, C/heads)
        # (B, heads, L, C/heads) -> transpose(1, 2) -> (B, L, heads, C/heads) -> reshape -> (B, L, C)
        return self.proj(out.transpose(1, 2).reshape(batch, length, channels))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm residual layer: x + ls1·attn(norm1(x)), then x + ls2·mlp(norm2(x))."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float, qk_norm: bool, layer_scale: float,
                 xavier_init: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qk_norm, xavier_init)
        self.ls1 = _layer_scale_or_identity(dim, layer_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, max(1, round(dim * mlp_ratio)))
        self.ls2 = _layer_scale_or_identity(dim, layer_scale)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))


class TransformerBlock(nn.Module):
    """`num_layers` pre-LN layers over the H·W tokens of a (B, C, H, W) map; returns a (B, C, H, W) map.

    No final LayerNorm: the output goes straight into C3's cv3 convolution, whose BatchNorm rescales it.
    """

    def __init__(self, dim: int, num_layers: int, *, num_heads: int = 4, mlp_ratio: float = 2.0,
                 qk_norm: bool = False, layer_scale: float = 0.0, xavier_init: bool = True) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"C3TR width {dim} must be divisible by 4 for the 2-D sine-cosine position encoding")
        self.layers = nn.ModuleList(
            TransformerLayer(dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm, layer_scale=layer_scale,
                             xavier_init=xavier_init)
            for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        tokens = map_to_tokens(x)  # (B, H·W, C)
        pos = sincos_position_encoding(height, width, channels, x.device, tokens.dtype)  # (H·W, C)
        for layer in self.layers:
            tokens = layer(tokens, pos)  # (B, H·W, C)
        return tokens_to_map(tokens, height, width)  # (B, C, H, W)


class TransformerLayerV5(nn.Module):
    """YOLOv5's TransformerLayer (no LayerNorm, linear MLP), batch-first, with optional layer-scale."""

    def __init__(self, dim: int, num_heads: int, layer_scale: float) -> None:
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.ma = nn.MultiheadAttention(embed_dim=dim, num_heads=num_heads, batch_first=True)
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.fc2 = nn.Linear(dim, dim, bias=False)
        self.ls1 = _layer_scale_or_identity(dim, layer_scale)
        self.ls2 = _layer_scale_or_identity(dim, layer_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, C). YOLOv5 calls nn.MultiheadAttention with its default need_weights=True, i.e. the explicit
        # bmm + softmax path; kept as is because this block is the baseline whose behaviour is being studied.
        x = self.ls1(self.ma(self.q(x), self.k(x), self.v(x))[0]) + x
        return self.ls2(self.fc2(self.fc1(x))) + x


class TransformerBlockV5(nn.Module):
    """YOLOv5's TransformerBlock: a learned linear position term added to the tokens, then the layers.

    YOLOv5's optional input Conv (used only when c1 != c2) is left out: inside C3TR it never exists.
    """

    def __init__(self, dim: int, num_layers: int, *, num_heads: int = 4, layer_scale: float = 0.0,
                 xavier_init: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"transformer width {dim} is not divisible by num_heads={num_heads}")
        self.linear = nn.Linear(dim, dim)  # YOLOv5's "learnable position embedding": p + linear(p)
        self.tr = nn.Sequential(*(TransformerLayerV5(dim, num_heads, layer_scale) for _ in range(num_layers)))
        if xavier_init:
            for layer in self.tr:
                for linear in (layer.q, layer.k, layer.v, layer.ma.out_proj):
                    nn.init.xavier_uniform_(linear.weight)
                nn.init.xavier_uniform_(layer.ma.in_proj_weight)  # already PyTorch's default, stated for clarity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        tokens = map_to_tokens(x)  # (B, H·W, C)
        tokens = self.tr(tokens + self.linear(tokens))  # (B, H·W, C)
        return tokens_to_map(tokens, height, width)  # (B, C, H, W)


class _TransformerC3(C3):
    """C3 whose Bottlenecks are a Transformer block of `n` layers over its hidden width. The keywords are the model's
    ``transformer:`` switches (`yolotr.config.model.TransformerConfig` names them); each block takes what it has."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, *,
                 num_heads: int = 4, mlp_ratio: float = 2.0, qk_norm: bool = False, layer_scale: float = 0.0,
                 xavier_init: bool | None = None) -> None:
        super().__init__(c1, c2, n, shortcut, g, e)
        self.m = self.block(int(c2 * e), n, num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                            layer_scale=layer_scale, xavier_init=xavier_init)

    @staticmethod
    def block(dim: int, n: int, *, num_heads: int, mlp_ratio: float, qk_norm: bool, layer_scale: float,
              xavier_init: bool | None) -> nn.Module:
        raise NotImplementedError


class C3TR(_TransformerC3):
    """C3 with yolotr's `TransformerBlock` in place of the Bottlenecks (yaml name ``C3TR``); Xavier init unless the
    model says otherwise."""

    @staticmethod
    def block(dim: int, n: int, *, num_heads: int, mlp_ratio: float, qk_norm: bool, layer_scale: float,
              xavier_init: bool | None) -> nn.Module:
        return TransformerBlock(dim, n, num_heads=num_heads, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                                layer_scale=layer_scale, xavier_init=True if xavier_init is None else xavier_init)


class C3TRv5(_TransformerC3):
    """C3 with YOLOv5's own `TransformerBlockV5` (yaml name ``C3TRv5``); YOLOv5's ``C3TR``, parameter for parameter.
    qk_norm and mlp_ratio have no place in it and are not used; Xavier init only when the model asks."""

    @staticmethod
    def block(dim: int, n: int, *, num_heads: int, mlp_ratio: float, qk_norm: bool, layer_scale: float,
              xavier_init: bool | None) -> nn.Module:
        return TransformerBlockV5(dim, n, num_heads=num_heads, layer_scale=layer_scale, xavier_init=bool(xavier_init))


# Modules whose parameters() get the trainer's Transformer learning-rate multiplier (see the module docstring).
TRANSFORMER_TYPES: tuple[type[nn.Module], ...] = (TransformerBlock, TransformerBlockV5)

# The C3 variants the yaml parser hands the model's TransformerConfig to.
TRANSFORMER_C3_TYPES: tuple[type[nn.Module], ...] = (C3TR, C3TRv5)

__all__ = [
    "C3TR",
    "C3TRv5",
    "TRANSFORMER_C3_TYPES",
    "TRANSFORMER_TYPES",
    "TransformerBlock",
    "TransformerBlockV5",
    "attention_with_fp32_softmax",
    "map_to_tokens",
    "sincos_position_encoding",
    "tokens_to_map",
]
